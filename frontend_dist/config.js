// Production configuration of the web client. Deployment overwrites this file with the real values:
//   apiBaseUrl          the API's base URL, e.g. "https://abc123.execute-api.us-east-1.amazonaws.com/api"
//   clerkPublishableKey the Clerk publishable key ("pk_live_..."); it names the Clerk Frontend API.
// The dev stack serves its own /config.js (from .local/stack.json) instead, with a devAuth block.
window.PROMPTCANVAS_CONFIG = { apiBaseUrl: "", clerkPublishableKey: "" };
