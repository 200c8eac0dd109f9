// The demo page: each button sends one request and shows status, headers that matter and body.
"use strict";

(function () {
  // Held in memory only: a token in localStorage is readable by any script on the origin.
  // ``previous`` is the refresh token a refresh replaced, for the replay step.
  const tokens = { access: null, refresh: null, previous: null };

  const $ = (id) => document.getElementById(id);

  function mask(token) {
    return token ? token.slice(0, 12) + "…" + " (" + token.length + " characters)" : "none";
  }

  function showTokens() {
    $("access-token").textContent = mask(tokens.access);
    $("refresh-token").textContent = mask(tokens.refresh);
  }

  function hideSecrets(body) {
    // Show the shape of a token response without printing the secrets into the page.
    if (body && typeof body === "object") {
      const copy = Object.assign({}, body);
      for (const key of ["access_token", "refresh_token"]) {
        if (copy[key]) copy[key] = mask(copy[key]);
      }
      return copy;
    }
    return body;
  }

  function render(step, method, url, response, body) {
    const box = $("result-" + step);
    box.textContent = "";
    const status = document.createElement("p");
    status.className = "status " + (response.ok ? "ok" : "error");
    status.id = "status-" + step;
    status.textContent = method + " " + url + " → " + response.status + " " + response.statusText;
    box.appendChild(status);
    for (const name of ["WWW-Authenticate", "Retry-After", "Cache-Control"]) {
      const value = response.headers.get(name);
      if (value) {
        const header = document.createElement("p");
        header.className = "header";
        header.textContent = name + ": " + value;
        box.appendChild(header);
      }
    }
    const pre = document.createElement("pre");
    pre.id = "body-" + step;
    pre.textContent = JSON.stringify(hideSecrets(body), null, 2);
    box.appendChild(pre);
  }

  function note(step, text) {
    // A step the page answers itself, without a request that could only fail.
    const box = $("result-" + step);
    box.textContent = "";
    const line = document.createElement("p");
    line.className = "status note";
    line.id = "status-" + step;
    line.textContent = text;
    box.appendChild(line);
  }

  function busy(on) {
    // One request at a time: a click while a login is still hashing would race it.
    for (const button of document.querySelectorAll("button")) button.disabled = on;
  }

  async function send(step, method, url, payload, withToken) {
    busy(true);
    try {
      return await exchange(step, method, url, payload, withToken);
    } finally {
      busy(false);
    }
  }

  async function exchange(step, method, url, payload, withToken) {
    const headers = { Accept: "application/json" };
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (withToken && tokens.access) headers.Authorization = "Bearer " + tokens.access;
    let response;
    try {
      response = await fetch(url, {
        method: method,
        headers: headers,
        body: payload === undefined ? undefined : JSON.stringify(payload),
        credentials: "omit", // the endpoints use Bearer tokens, never the admin's cookie
      });
    } catch (error) {
      $("result-" + step).textContent = "Network error: " + error;
      return null;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    render(step, method, url, response, body);
    return response.ok ? body : null;
  }

  function credentials() {
    return { username: $("username").value, password: $("password").value };
  }

  function keep(body) {
    if (body && body.access_token) {
      tokens.access = body.access_token;
      tokens.refresh = body.refresh_token || null;
      showTokens();
    }
  }

  $("register").addEventListener("click", () =>
    send("register", "POST", "/auth/register/", credentials(), false));

  $("login").addEventListener("click", async () => {
    const body = await send("login", "POST", "/auth/token/", credentials(), false);
    if (body) tokens.previous = null; // a new login: nothing of the old one to replay
    keep(body);
  });

  $("call").addEventListener("click", () => send("call", "GET", "/api/me/", undefined, true));

  $("call-anonymous").addEventListener("click", () =>
    send("call", "GET", "/api/me/", undefined, false));

  $("refresh").addEventListener("click", async () => {
    if (!tokens.refresh) {
      note("refresh", "There is no refresh token: log in first (step 2).");
      return;
    }
    const used = tokens.refresh;
    const body = await send("refresh", "POST", "/auth/token/",
      { grant_type: "refresh_token", refresh_token: used }, false);
    if (body) tokens.previous = used;
    keep(body);
  });

  $("replay").addEventListener("click", async () => {
    $("result-replay-check").textContent = "";
    if (!tokens.previous) {
      note("replay", "There is no used refresh token yet: log in (step 2) and refresh (step 4) first.");
      return;
    }
    const replayed = await send("replay", "POST", "/auth/token/",
      { grant_type: "refresh_token", refresh_token: tokens.previous }, false);
    if (replayed === null) {
      // Refused: show that the current pair went with it.
      await send("replay-check", "GET", "/api/me/", undefined, true);
      const box = $("result-replay-check");
      const line = document.createElement("p");
      line.id = "replay-verdict";
      line.textContent = "The whole login was revoked: the access token from step 4 is refused " +
        "too. Log in again (step 2).";
      box.prepend(line);
      tokens.refresh = null;
      tokens.previous = null;
      showTokens();
    }
  });

  $("logout").addEventListener("click", async () => {
    if (!tokens.refresh && !tokens.access) {
      note("logout", "There is nothing to log out of: log in first (step 2).");
      return;
    }
    // Revoking the refresh token revokes every token of this login, the access token included.
    const body = await send("logout", "POST", "/auth/token/revoke/",
      { token: tokens.refresh || tokens.access || "" }, false);
    if (body !== null) {
      // Keep the (now revoked) access token so that step 3 shows the 401 it gets.
      tokens.refresh = null;
      tokens.previous = null;
      showTokens();
    }
  });

  showTokens();
})();
