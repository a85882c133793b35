// The activity's configuration page inside Journey Builder. It asks Journey Builder for the
// journey's entry event (requestTriggerEventDefinition) and the entry source's fields
// (requestSchema), and on "Done" (clickedNext) saves the in-arguments bound to them:
// {{Event."<eventDefinitionKey>".<Field>}} compiles in every journey with that entry source, while
// {{Contact.Attribute."<set>".<Field>}} compiles only where Data Designer links a data extension
// of that name, so the attribute set (data-attribute-set, MC_ATTRIBUTE_SET) is only a fallback.
// The contact key and the journey's default email are bound the same way in every journey.
(function () {
  "use strict";
  if (!window.Postmonger) { return; }
  var page = document.body;
  var names = (page.getAttribute("data-in-arguments") || "").split(/\s+/).filter(Boolean);
  var attributeSet = page.getAttribute("data-attribute-set") || "";
  var alwaysBound = { SubscriberKey: "{{Contact.Key}}", EmailAddress: "{{InteractionDefaults.Email}}" };
  var connection = new window.Postmonger.Session();
  var activity = {};
  var eventKey = "";
  // The entry source's field names as spelled there (bindings are case-sensitive), once known.
  var entryFields = null;

  function usable(text) {
    return typeof text === "string" && text !== "" && !/["{}]/.test(text);
  }

  function pathSegment(name) {
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : "\"" + name + "\"";
  }

  function entryField(name) {
    if (entryFields === null) { return name; }
    var wanted = name.toLowerCase();
    for (var i = 0; i < entryFields.length; i++) {
      if (entryFields[i].toLowerCase() === wanted) { return entryFields[i]; }
    }
    return null;
  }

  function binding(name) {
    if (alwaysBound[name]) { return alwaysBound[name]; }
    var field = eventKey ? entryField(name) : null;
    if (field) { return "{{Event.\"" + eventKey + "\"." + pathSegment(field) + "}}"; }
    if (attributeSet) { return "{{Contact.Attribute.\"" + attributeSet + "\"." + name + "}}"; }
    return null;
  }

  function inArguments() {
    var list = [];
    names.forEach(function (name) {
      var value = binding(name);
      if (value) {
        var item = {};
        item[name] = value;
        list.push(item);
      }
    });
    return list;
  }

  function show() {
    names.forEach(function (name) {
      var cell = document.querySelector("[data-binding-for=\"" + name + "\"]");
      if (cell) { cell.textContent = binding(name) || "(not in the entry source: not sent)"; }
    });
    var note = document.getElementById("entry-source");
    if (note) {
      note.textContent = eventKey
        ? "Entry source: event " + eventKey + "."
        : attributeSet
          ? "No entry event known: the columns are bound to attribute set " + attributeSet + "."
          : "No entry event known: only the contact key and the default email are bound.";
    }
  }

  connection.on("initActivity", function (data) {
    activity = data && typeof data === "object" ? data : {};
    show();
  });

  connection.on("requestedTriggerEventDefinition", function (definition) {
    var key = definition && definition.eventDefinitionKey;
    eventKey = usable(key) ? key : "";
    show();
  });

  connection.on("requestedSchema", function (data) {
    if (!data || data.error || !Array.isArray(data.schema)) { return; }
    entryFields = data.schema
      .filter(function (field) {
        return field && usable(field.name) && (typeof field.key !== "string" || field.key.indexOf("Event.") === 0);
      })
      .map(function (field) { return field.name; });
    show();
  });

  connection.on("clickedNext", function () {
    activity.arguments = activity.arguments || {};
    activity.arguments.execute = activity.arguments.execute || {};
    activity.arguments.execute.inArguments = inArguments();
    activity.metaData = activity.metaData || {};
    activity.metaData.isConfigured = true;
    connection.trigger("updateActivity", activity);
  });

  connection.trigger("ready");
  connection.trigger("requestTriggerEventDefinition");
  connection.trigger("requestSchema");
})();
