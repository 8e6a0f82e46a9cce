// Copy buttons: <button data-copy="#input-id"> copies that field's value and says so to screen readers too.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  const status = button.parentElement.querySelector(".copy-status");
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied.";
  } catch (error) {
    field.select();  // no clipboard access (plain HTTP): leave it selected for Ctrl+C
    if (status) status.textContent = "Selected: press Ctrl+C to copy.";
  }
});
