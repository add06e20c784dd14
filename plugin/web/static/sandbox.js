/* The sandbox page: build a CDS Hooks request from a bundle, call the service as an EHR does,
 * render the cards (indicator, summary, detail, source, suggestions, dismiss with reasons,
 * links) and the visit timeline, and send feedback. Accepting a suggestion applies its actions
 * to the bundle's draft orders (/sandbox/api/apply), lists the changed charge lines, and fires
 * again, as an EHR would; each applied suggestion can be undone. No framework, no build step.
 * Text from the service or the bundle only ever reaches the page as text (textContent), or as
 * HTML made by the escaping Markdown renderer (markdown.js).
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var config = $("config");
  var services = JSON.parse(config.getAttribute("data-services"));
  var authOn = config.getAttribute("data-auth") === "on";
  var INDICATOR_LABEL = { critical: "Critical", warning: "Warning", info: "Info" };
  var INDICATOR_ORDER = { critical: 0, warning: 1, info: 2 };
  var feedbackLog = [];
  // What the cards on screen were computed from: {text, bundle, hook}; set by each fire.
  var lastFired = null;
  // Suggestions applied since the bundle was loaded: [{text (the bundle before), label, changes}].
  var applied = [];
  var applying = false;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "html") { node.innerHTML = attrs[key]; }
      else if (key === "className") { node.className = attrs[key]; }
      else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function pretty(value) { return JSON.stringify(value, null, 2); }

  function setStatus(text, kind) {
    var node = $("fire-status");
    node.textContent = text || "";
    node.className = "status" + (kind ? " status-" + kind : "");
  }

  function selectedHook() {
    var checked = document.querySelector('input[name="hook"]:checked');
    return checked ? checked.value : "order-sign";
  }

  // With client authentication on, each call needs its own JWT: its aud is the exact URL called
  // and its jti is single-use. The field is emptied once a token has been sent.
  function headers() {
    var h = { "Content-Type": "application/json", "Accept": "application/json" };
    var jwt = $("jwt");
    if (authOn && jwt && jwt.value.trim()) {
      h.Authorization = "Bearer " + jwt.value.trim();
      jwt.value = "";
    }
    return h;
  }

  function postJson(url, body, extraHeaders) {
    return fetch(url, {
      method: "POST",
      headers: extraHeaders || { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin"
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
        return { ok: response.ok, status: response.status, data: data };
      });
    });
  }

  function problem(result) {
    var data = result.data;
    if (data && data.error) { return data.error; }
    if (data && data.resourceType === "OperationOutcome" && data.issue && data.issue.length) {
      return data.issue.map(function (i) { return i.diagnostics || i.code; }).join("; ");
    }
    return "HTTP " + result.status;
  }

  function updateServiceLabel() { $("service-id").textContent = services[selectedHook()]; }

  // ------------------------------------------------------------------ choosing a bundle

  function bundleStatus(text) { $("bundle-status").textContent = text ? "· " + text : ""; }

  function chooseScenario() {
    var option = $("scenario").selectedOptions[0];
    var file = option ? option.value : "";
    $("scenario-shows").textContent = file ? option.getAttribute("data-shows") : "";
    if (!file) { return Promise.resolve(); }
    document.querySelectorAll('input[name="hook"]').forEach(function (radio) {
      radio.checked = radio.value === option.getAttribute("data-hook");
    });
    $("payer-rule").value = "coverage";  // the sample's Coverage (else the default) decides
    $("pair-rule").value = option.getAttribute("data-pair");
    updateServiceLabel();
    bundleStatus("loading…");
    return fetch("/sandbox/samples/" + encodeURIComponent(file), { headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (bundle) {
        $("bundle").value = pretty(bundle);
        bundleStatus(file + " · " + (bundle.entry || []).length + " entries");
        forgetApplied();
      });
  }

  $("scenario").addEventListener("change", function () { chooseScenario(); });
  document.querySelectorAll('input[name="hook"]').forEach(function (radio) {
    radio.addEventListener("change", updateServiceLabel);
  });
  $("bundle-file").addEventListener("change", function (event) {
    var file = event.target.files && event.target.files[0];
    if (!file) { return; }
    var reader = new FileReader();
    reader.onload = function () {
      $("bundle").value = String(reader.result);
      forgetApplied();
      $("scenario").value = "";
      $("scenario-shows").textContent = "";
      bundleStatus(file.name);
      $("bundle-editor").open = true;
    };
    reader.readAsText(file);
  });
  $("bundle").addEventListener("input", function () { bundleStatus("edited"); });

  // ------------------------------------------------------------------ feedback

  function sendFeedback(serviceId, item, card, node, doneText) {
    var body = { feedback: [item] };
    feedbackLog.push({ url: "/cds-services/" + serviceId + "/feedback", body: body });
    $("feedback-json").textContent = pretty(feedbackLog);
    node.querySelectorAll("button, select, input").forEach(function (b) { b.disabled = true; });
    return postJson("/cds-services/" + encodeURIComponent(serviceId) + "/feedback", body, headers())
      .then(function (result) {
        var note = node.querySelector(".card-feedback");
        if (result.ok) {
          node.classList.add("card-done");
          node.setAttribute("data-feedback", item.outcome);
          note.textContent = doneText;
          note.className = "card-feedback ok";
        } else {
          note.textContent = "Feedback not recorded: " + problem(result);
          note.className = "card-feedback error";
          node.querySelectorAll("button, select, input").forEach(function (b) { b.disabled = false; });
        }
        return result.ok;
      });
  }

  function nowIso() { return new Date().toISOString(); }

  // ------------------------------------------------------------------ cards

  function renderCard(card, serviceId) {
    var indicator = card.indicator in INDICATOR_LABEL ? card.indicator : "info";
    var topic = (card.source && card.source.topic) || {};
    var node = el("article", {
      className: "card card-" + indicator,
      "data-indicator": indicator,
      "data-topic": topic.code || "",
      "data-uuid": card.uuid || ""
    });
    var head = el("header", { className: "card-head" }, [
      el("span", { className: "badge badge-" + indicator, text: INDICATOR_LABEL[indicator] }),
      el("h3", { className: "card-summary", text: card.summary || "" })
    ]);
    node.appendChild(head);
    if (card.detail) {
      node.appendChild(el("div", { className: "card-detail markdown", html: window.CardMarkdown.render(card.detail) }));
    }
    var source = el("p", { className: "card-source" }, [
      el("span", { text: "Source: " }),
      card.source && card.source.url
        ? el("a", { href: card.source.url, target: "_blank", rel: "noopener noreferrer", text: card.source.label })
        : el("span", { text: (card.source && card.source.label) || "" })
    ]);
    if (topic.code) {
      source.appendChild(el("code", { className: "topic", title: topic.display || "", text: topic.code }));
    }
    node.appendChild(source);

    var actions = el("div", { className: "card-actions" });
    (card.suggestions || []).forEach(function (suggestion) {
      var button = el("button", {
        type: "button",
        className: "button " + (suggestion.isRecommended ? "primary" : "secondary") + " suggestion",
        "data-suggestion": suggestion.uuid || "",
        text: suggestion.label
      });
      var changes = (suggestion.actions || []).map(function (a) { return a.description; }).join("\n");
      if (changes) { button.title = changes; }
      button.addEventListener("click", function () {
        var stale = staleReason();
        if (stale) { cardNote(node, stale, "error"); return; }
        // Feedback first (as the public CDS Hooks Sandbox, only when both uuids exist), then
        // the change, so a refused feedback call never leaves a half-taken suggestion.
        var recorded = card.uuid && suggestion.uuid
          ? sendFeedback(serviceId, {
            card: card.uuid,
            outcome: "accepted",
            acceptedSuggestions: [{ id: suggestion.uuid }],
            outcomeTimestamp: nowIso()
          }, card, node, "Accepted: " + suggestion.label + ". Feedback recorded.")
          : Promise.resolve(true);
        recorded.then(function (ok) { if (ok) { return applySuggestion(suggestion, node); } });
      });
      actions.appendChild(button);
    });
    (card.links || []).forEach(function (link) {
      var a = el("a", {
        className: "button secondary link-" + (link.type || "absolute"),
        href: link.url, target: "_blank", rel: "noopener noreferrer", text: link.label
      });
      if (link.type === "smart") {
        a.title = "SMART app" + (link.appContext ? " · appContext " + link.appContext : "");
      }
      actions.appendChild(a);
    });
    if (card.uuid) {
      var dismiss = el("button", { type: "button", className: "button ghost dismiss", text: "Dismiss…" });
      actions.appendChild(dismiss);
      var form = el("div", { className: "dismiss-form", hidden: "hidden" });
      var select = el("select", { className: "override-reason", "aria-label": "Reason for dismissing" });
      select.appendChild(el("option", { value: "", text: "Choose a reason…" }));
      (card.overrideReasons || []).forEach(function (reason, index) {
        select.appendChild(el("option", { value: String(index), text: reason.display || reason.code }));
      });
      var comment = el("input", { type: "text", className: "override-comment", placeholder: "Comment (optional)", maxlength: "500", "aria-label": "Comment" });
      var confirm = el("button", { type: "button", className: "button secondary confirm-dismiss", text: "Dismiss card" });
      form.appendChild(select);
      form.appendChild(comment);
      form.appendChild(confirm);
      dismiss.addEventListener("click", function () {
        form.hidden = !form.hidden;
        if (!form.hidden) { select.focus(); }
      });
      confirm.addEventListener("click", function () {
        var item = { card: card.uuid, outcome: "overridden", outcomeTimestamp: nowIso() };
        var reason = select.value === "" ? null : card.overrideReasons[Number(select.value)];
        var overrideReason = {};
        if (reason) { overrideReason.reason = { system: reason.system, code: reason.code }; }
        if (comment.value.trim()) { overrideReason.userComment = comment.value.trim(); }
        if (Object.keys(overrideReason).length) { item.overrideReason = overrideReason; }
        sendFeedback(serviceId, item, card, node,
          "Dismissed" + (reason ? ": " + (reason.display || reason.code) : "") + ". Feedback recorded.");
      });
      node.appendChild(actions);
      node.appendChild(form);
    } else if (actions.childNodes.length) {
      node.appendChild(actions);
    }
    node.appendChild(el("p", { className: "card-feedback", role: "status" }));
    return node;
  }

  function renderCards(cards, serviceId) {
    var box = $("cards");
    box.innerHTML = "";
    var sorted = cards.slice().sort(function (a, b) {
      return (INDICATOR_ORDER[a.indicator] || 0) - (INDICATOR_ORDER[b.indicator] || 0);
    });
    if (!sorted.length) {
      box.appendChild(el("p", { className: "empty", text: "No cards: the service has nothing to say about this request." }));
    }
    sorted.forEach(function (card) { box.appendChild(renderCard(card, serviceId)); });
    var counts = {};
    cards.forEach(function (c) { counts[c.indicator] = (counts[c.indicator] || 0) + 1; });
    $("cards-count").textContent = cards.length + " card" + (cards.length === 1 ? "" : "s") +
      (cards.length ? " · " + Object.keys(counts).map(function (k) { return counts[k] + " " + k; }).join(", ") : "");
  }

  // ------------------------------------------------------------------ applying suggestions

  function cardNote(node, text, kind) {
    var note = node.querySelector(".card-feedback");
    note.textContent = text;
    note.className = "card-feedback " + (kind || "");
  }

  // Why a suggestion on the cards shown cannot be applied now, or "" when it can.
  function staleReason() {
    if (applying) { return "Another suggestion is being applied: wait for the new cards."; }
    if (!lastFired) { return "Fire the hook first."; }
    if ($("bundle").value.trim() !== lastFired.text) {
      return "The bundle changed after these cards were shown: fire again, then accept the suggestion.";
    }
    return "";
  }

  // One change as text: "97530 · ServiceRequest/x: units 2 → 1; modifier 59 added".
  function lineText(line) {
    if (!line) { return "not a therapy charge"; }
    var units = line.units === null || line.units === undefined ? "no units" : "×" + line.units;
    return line.code + " " + units + (line.modifiers.length ? " · " + line.modifiers.join(", ") : "");
  }

  function changeText(change) {
    var before = change.before, after = change.after;
    if (change.change === "removed") { return "removed " + lineText(before); }
    if (change.change === "added") { return "added " + lineText(after); }
    if (!before || !after) { return lineText(before) + " → " + lineText(after); }
    var parts = [];
    if (before.code !== after.code) { parts.push("code " + before.code + " → " + after.code); }
    if (before.units !== after.units) {
      parts.push("units " + (before.units === null ? "none" : before.units) + " → " +
        (after.units === null ? "none" : after.units));
    }
    var added = after.modifiers.filter(function (m) { return before.modifiers.indexOf(m) < 0; });
    var removed = before.modifiers.filter(function (m) { return after.modifiers.indexOf(m) < 0; });
    if (added.length) { parts.push("modifier " + added.join(", ") + " added"); }
    if (removed.length) { parts.push("modifier " + removed.join(", ") + " removed"); }
    return after.code + ": " + (parts.length ? parts.join("; ") : "updated (code, units and modifiers unchanged)");
  }

  function renderApplied() {
    var box = $("applied"), list = $("applied-list");
    list.innerHTML = "";
    box.hidden = applied.length === 0;
    applied.forEach(function (step) {
      var changes = el("ul", { className: "applied-changes" }, step.changes.map(function (change) {
        return el("li", { className: "change change-" + change.change, "data-ref": change.ref, "data-change": change.change }, [
          el("span", { text: changeText(change) }),
          el("span", { className: "muted mono", text: " " + change.ref })
        ]);
      }));
      list.appendChild(el("li", {}, [el("strong", { text: step.label }), changes]));
    });
  }

  function forgetApplied() {
    applied = [];
    renderApplied();
  }

  // Put a bundle back (undo) and fire again.
  function restore(text, status) {
    $("bundle").value = text;
    bundleStatus(status);
    renderApplied();
    refire(status.charAt(0).toUpperCase() + status.slice(1));
  }

  // Fire again after the bundle changed, saying why. With client authentication on each call
  // needs a fresh JWT, so the page waits for one.
  function refire(why) {
    if (authOn) {
      setStatus(why + ". Paste a fresh JWT for the service and fire again to see the new cards.", "ok");
      return Promise.resolve();
    }
    return fire().then(function () {
      var status = $("fire-status");
      var said = status.textContent;
      if (status.classList.contains("status-ok")) {
        status.textContent = why + "; " + said.charAt(0).toLowerCase() + said.slice(1);
      }
    });
  }

  function refusedText(result, actions) {
    var data = result.data;
    if (data && data.refused && data.refused.length) {
      return "Not applied: " + data.refused.map(function (r) {
        var action = actions[r.action - 1];
        var what = action && typeof action.description === "string" ? action.description : "action " + r.action;
        return what + " (" + r.reason + ")";
      }).join("; ");
    }
    return "Not applied: " + problem(result);
  }

  function applySuggestion(suggestion, node) {
    var actions = suggestion.actions || [];
    var done = node.querySelector(".card-feedback").textContent;
    if (!actions.length) {
      cardNote(node, (done ? done + " " : "") + "This suggestion carries no change to apply.", "ok");
      return Promise.resolve();
    }
    var stale = staleReason();
    if (stale) { cardNote(node, stale, "error"); return Promise.resolve(); }
    var from = lastFired;
    applying = true;
    setStatus("Applying the suggestion…", "busy");
    return postJson("/sandbox/api/apply", { bundle: from.bundle, hook: from.hook, actions: actions })
      .then(function (result) {
        applying = false;
        if (!result.ok) {
          cardNote(node, (done ? done + " " : "") + refusedText(result, actions), "error");
          setStatus("The suggestion was not applied.", "error");
          return;
        }
        applied.push({ text: from.text, label: suggestion.label, changes: result.data.changes || [] });
        $("bundle").value = pretty(result.data.bundle);
        bundleStatus("suggestion applied");
        renderApplied();
        return refire("Suggestion applied");
      }, function (error) {
        applying = false;
        cardNote(node, "Not applied: " + error.message, "error");
      });
  }

  $("undo-applied").addEventListener("click", function () {
    var step = applied.pop();
    if (step) { restore(step.text, "suggestion undone"); }
  });
  $("restore-original").addEventListener("click", function () {
    var first = applied[0];
    applied = [];
    if (first) { restore(first.text, "original bundle"); }
  });

  // ------------------------------------------------------------------ timeline

  function renderTimeline(view) {
    var box = $("timeline");
    box.innerHTML = "";
    $("timeline-zone").textContent = view.visits.length ? "times in " + view.timeZone : "";
    if (!view.visits.length) {
      box.appendChild(el("p", { className: "empty", text: "No visit with timed therapy services in this bundle." }));
    }
    view.visits.forEach(function (visit) {
      var units = Object.keys(visit.units).map(function (code) {
        return el("li", {}, [el("code", { text: code }), el("span", { text: " " + visit.units[code] + " u · " + (visit.minutes[code] || 0) + " min" })]);
      });
      var pairClass = visit.pair === "SUPPORTED" ? "ok" : visit.pair === "NOT_SUPPORTED" ? "bad" : "neutral";
      var figure = el("figure", { className: "visit", "data-date": visit.date, "data-discipline": visit.discipline }, [
        el("figcaption", {}, [
          el("strong", { text: visit.discipline + " visit " + visit.date }),
          el("span", { className: "muted", text: " · " + visit.totalTimedMinutes + " timed min · " + visit.payerRule.toUpperCase() + " · times in " + visit.timeZone }),
          el("span", { className: "muted payer-rule-reason", text: visit.payerRuleReason ? " · " + visit.payerRuleReason : "" }),
          el("span", { className: "pill pill-" + pairClass, text: "pair " + visit.pair })
        ]),
        el("div", { className: "svg-box", html: visit.svg }),
        el("ul", { className: "units" }, units)
      ]);
      box.appendChild(figure);
    });
  }

  // ------------------------------------------------------------------ firing

  function fire(event) {
    if (event) { event.preventDefault(); }
    var text = $("bundle").value.trim();
    var bundle;
    if (!text) { setStatus("Choose a sample visit or paste a bundle first.", "error"); return Promise.resolve(); }
    try { bundle = JSON.parse(text); } catch (e) {
      setStatus("The bundle is not valid JSON: " + e.message, "error");
      $("bundle-editor").open = true;
      return Promise.resolve();
    }
    var hook = selectedHook();
    var rules = { payerRule: $("payer-rule").value, pairRule: $("pair-rule").value, cardPolicy: $("card-policy").value };
    lastFired = { text: text, bundle: bundle, hook: hook };
    setStatus("Building the request…", "busy");
    $("fire").disabled = true;
    var timeline = postJson("/sandbox/api/timeline", { bundle: bundle, payerRule: rules.payerRule, pairRule: rules.pairRule })
      .then(function (result) {
        if (result.ok) { renderTimeline(result.data); }
        else { $("timeline").innerHTML = ""; $("timeline").appendChild(el("p", { className: "empty error", text: problem(result) })); }
      });
    var exchange = postJson("/sandbox/api/request", { bundle: bundle, hook: hook, payerRule: rules.payerRule, pairRule: rules.pairRule, cardPolicy: rules.cardPolicy })
      .then(function (built) {
        if (!built.ok) { throw new Error("Could not build the request: " + problem(built)); }
        var serviceId = built.data.serviceId;
        var url = "/cds-services/" + encodeURIComponent(serviceId);
        $("request-url").textContent = "POST " + url;
        $("request-json").textContent = pretty(built.data.request);
        setStatus("Calling " + serviceId + "…", "busy");
        return postJson(url, built.data.request, headers()).then(function (result) {
          $("response-status").textContent = "HTTP " + result.status;
          $("response-json").textContent = typeof result.data === "string" ? result.data : pretty(result.data);
          if (!result.ok) { throw new Error("The service answered HTTP " + result.status + ": " + problem(result)); }
          renderCards(result.data.cards || [], serviceId);
          setStatus("Hook fired: " + hook + " → " + serviceId, "ok");
        });
      })
      .catch(function (error) {
        $("cards").innerHTML = "";
        $("cards").appendChild(el("p", { className: "empty error", text: error.message }));
        $("cards-count").textContent = "";
        setStatus(error.message, "error");
      });
    return Promise.all([timeline, exchange]).then(function () {
      $("fire").disabled = false;
      document.body.setAttribute("data-fired", String(Number(document.body.getAttribute("data-fired") || "0") + 1));
    });
  }

  $("controls").addEventListener("submit", fire);
  updateServiceLabel();
  var params = new URLSearchParams(window.location.search);
  if (params.get("scenario")) {
    $("scenario").value = params.get("scenario");
    chooseScenario().then(function () { if (params.get("fire") === "1") { fire(); } });
  }
})();
