// Re-fetch each live part of the page every two seconds and swap it in.
// A part is left alone while the pointer is on a button inside it, so a click is never lost.
(function () {
  const EVERY_MS = 2000;
  async function refresh(el) {
    if (el.querySelector("button:hover, details:hover summary:hover")) return;
    const openDetails = Array.from(el.querySelectorAll("details")).map((d) => d.open);
    try {
      const reply = await fetch(el.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (reply.status === 401) { window.location = "/login"; return; }
      if (!reply.ok) return;
      el.innerHTML = await reply.text();
      el.querySelectorAll("details").forEach((d, i) => { if (i < openDetails.length) d.open = openDetails[i]; });
      document.body.classList.remove("offline");
    } catch (e) {
      document.body.classList.add("offline");
    }
  }
  // A tab out of sight asks nothing, so a page left open in the background lets
  // the console exit when idle (it starts again when the tab comes back).
  function tick() {
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(refresh);
  }
  setInterval(tick, EVERY_MS);
  document.addEventListener("visibilitychange", tick);
})();
