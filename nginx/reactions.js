// Cache keys for GET /analytics?timestamp=<ms> (njs: nginx's map cannot divide).
// Loaded by the rendered configuration (js_import); see docs/operations.md, nginx: the GET cache.

// A query of exactly timestamp=<digits>, at most 19 digits (common/events.py):
// anything else is not cached, so the aggregator answers it (and its 400s) itself.
var PLAIN_QUERY = /^timestamp=([0-9]{1,19})$/;
var MS_PER_HOUR = 3600000;
// A fresh entry serves one half-second of the clock: at most 500 ms old.
var WINDOW_MS = 500;

// The UTC hour asked for, or "" when the request must not use a cache: not a
// plain query, or an hour after the current one (its answer will change).
function hour(r) {
    var found = PLAIN_QUERY.exec(r.variables.args || "");
    if (found === null) {
        return "";
    }
    var asked = Math.floor(Number(found[1]) / MS_PER_HOUR);
    return asked > Math.floor(Date.now() / MS_PER_HOUR) ? "" : String(asked);
}

// The fresh cache's key: the hour and the half-second of the clock, so every
// timestamp of one hour shares one entry, and a new entry starts every 500 ms.
function freshKey(r) {
    var asked = hour(r);
    return asked === "" ? "" : asked + ":" + Math.floor(Date.now() / WINDOW_MS);
}

export default {hour, freshKey};
