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

// An <audio data-error-target="#id"> that cannot play (a quota reached, a voice not ready...): ask its URL again
// for the API's error message and show it there. A refused request is not billed, and the URL names one request
// id, so asking again never bills twice.
document.addEventListener("error", async (event) => {
  const audio = event.target;
  if (!(audio instanceof HTMLAudioElement) || !audio.dataset.errorTarget) return;
  const target = document.querySelector(audio.dataset.errorTarget);
  let message = "The audio could not be played.";
  try {
    const response = await fetch(audio.currentSrc || audio.src, { credentials: "same-origin" });
    if (!response.ok) message = (await response.json()).error.message;
  } catch (error) { /* keep the generic message */ }
  target.textContent = message;
  target.hidden = false;
}, true);  // error events do not bubble: listen while they are captured
