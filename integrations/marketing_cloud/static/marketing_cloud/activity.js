// The activity's configuration page inside Journey Builder: nothing to configure, so "Done"
// marks the activity configured and hands its arguments back unchanged.
(function () {
  "use strict";
  if (!window.Postmonger) { return; }
  var connection = new window.Postmonger.Session();
  var activity = {};
  connection.on("initActivity", function (data) { activity = data || {}; });
  connection.on("clickedNext", function () {
    activity.metaData = activity.metaData || {};
    activity.metaData.isConfigured = true;
    connection.trigger("updateActivity", activity);
  });
  connection.trigger("ready");
})();
