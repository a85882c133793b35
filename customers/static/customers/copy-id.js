// Copy buttons next to short master IDs: shown only where the clipboard can be written (the
// admin's CSP forbids inline script, so this file is loaded by the lists that show them).
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) return;
  for (const button of document.querySelectorAll("button.copy-id")) {
    button.hidden = false;
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "copied";
      setTimeout(() => { button.textContent = "copy"; }, 1500);
    });
  }
});
