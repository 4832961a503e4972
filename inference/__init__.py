"""Face-swap engine: bytes and frames in, swapped bytes and frames out.

A pure library: it knows nothing of billing or HTTP. The job runner (app/) drives it.
"""
