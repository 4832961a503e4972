"""Money: Token accounts, the append-only double-entry ledger, holds and bulk recharges."""
