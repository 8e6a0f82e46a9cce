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

// An <audio> of the portal that cannot play (a quota reached, an engine down...): ask its URL again for the API's
// error message and show it (in its data-error-target, else just after it). A refused request is not billed, and a
// playground URL names one request id, so asking again never bills twice.
document.addEventListener("error", async (event) => {
  const audio = event.target;
  if (!(audio instanceof HTMLAudioElement)) return;
  let target = audio.dataset.errorTarget && document.querySelector(audio.dataset.errorTarget);
  if (!target) {
    target = document.createElement("p");
    target.className = "error";
    target.setAttribute("role", "alert");
    audio.after(target);
  }
  let message = "The audio could not be played.";
  try {
    const controller = new AbortController();
    const response = await fetch(audio.currentSrc || audio.src, { credentials: "same-origin", signal: controller.signal });
    if (response.ok) controller.abort();  // it plays now after all: leave the audio unmade (and unbilled)
    else message = (await response.json()).error.message;
  } catch (error) { /* keep the generic message */ }
  target.textContent = message;
  target.hidden = false;
}, true);  // error events do not bubble: listen while they are captured

// A polled voice row whose voice is gone (a colleague deleted it: the server answers 404): drop the row, which also
// stops its polling, rather than asking again every few seconds.
document.addEventListener("htmx:responseError", (event) => {
  const row = event.detail.elt;
  if (event.detail.xhr.status === 404 && row.matches("tr[hx-get]")) row.remove();
});
