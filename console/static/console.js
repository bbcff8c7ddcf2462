// The live sections: each element with data-live="URL" is replaced by a
// fresh rendering of its section every second while the page is visible,
// so that a running maintenance run's bar and counts move without a reload.
"use strict";

const REFRESH_MS = 1000;

async function refresh(element) {
  try {
    const response = await fetch(element.dataset.live, { credentials: "same-origin" });
    if (response.ok) {
      element.innerHTML = await response.text();
    }
  } catch (error) {
    // The console restarting, or the network: the next tick tries again.
  }
}

setInterval(() => {
  if (document.hidden) {
    return;
  }
  for (const element of document.querySelectorAll("[data-live]")) {
    refresh(element);
  }
}, REFRESH_MS);
