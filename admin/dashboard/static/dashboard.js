// SwapMeter dashboard: small progressive enhancements. Every form works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A form submitted once stays submitted: its buttons are disabled until the next page,
  // so a double click sends one request (the server's idempotency keys are the real guard).
  document.querySelectorAll("form").forEach((form) => {
    form.addEventListener("submit", (event) => {
      const question = form.dataset.confirm;
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      if (form.method.toLowerCase() === "post") {
        form.querySelectorAll("button[type=submit], input[type=submit]").forEach((b) => {
          window.setTimeout(() => { b.disabled = true; }, 0);
        });
      }
    });
  });
  // Choosers (data-autosubmit) reload the page as soon as a choice is made.
  document.querySelectorAll("form[data-autosubmit] select").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
  // Times written as <time datetime="..."> are shown in the browser's own time zone.
  document.querySelectorAll("time[data-local]").forEach((el) => {
    const when = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      el.title = el.textContent;
      el.textContent = when.toLocaleString();
    }
  });
});
