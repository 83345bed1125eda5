// Log in: an account's SIP user@domain + password, or an API token
// (`sipledger token create --role admin` gives the first admin one).  Either is
// exchanged at POST /v1/session for a short-lived session token.
import { api, clear, errorBox, formValues, h, input, saveSession, session } from "../lib.js";

export async function loginView(main) {
  if (session()) {
    location.replace("#/");
    return;
  }
  const out = h("div", { id: "login-result" });
  const submit = (kind) => async (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    const body = kind === "token" ? { token: v.token } : { user: v.user, password: v.password };
    try {
      const s = await api("POST", "/v1/session", { body });
      saveSession(s);
      location.hash = "#/";
    } catch (err) {
      clear(out, errorBox(err));
    }
  };
  clear(main, h("div", { class: "login" },
    h("h1", {}, "Log in"),
    h("form", { id: "login-user", class: "card", onsubmit: submit("user") },
      h("h2", {}, "Account"),
      input("User (user@domain)", { name: "user", id: "user", autocomplete: "username", required: true,
        maxlength: 255, placeholder: "alice@example.test" }),
      input("SIP password", { name: "password", id: "password", type: "password", autocomplete: "current-password",
        required: true, maxlength: 128 }),
      h("button", { type: "submit", id: "login-user-submit" }, "Log in")),
    h("form", { id: "login-token", class: "card", onsubmit: submit("token") },
      h("h2", {}, "Operator"),
      input("API token", { name: "token", id: "token", type: "password", autocomplete: "off", required: true,
        maxlength: 128, placeholder: "slt_…" }),
      h("p", { class: "hint" }, "sipledger token create --role admin"),
      h("button", { type: "submit", id: "login-token-submit" }, "Log in with token")),
    out));
}
