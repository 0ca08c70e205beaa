// Entry point: starts the editor. `window.app` is the App (handy in the console and tests).

import { App } from "./app.js";

const app = new App();
window.app = app;
app.start().catch((error) => {
  console.error(error);
  document.body.dataset.ready = "error";
});
