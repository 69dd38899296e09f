// Reload the dashboard every 30 s (the page is rendered on the server; no library, no CDN).
"use strict";
setTimeout(function () { window.location.reload(); }, 30000);
