// A schema registry fixture for tide's tests: the REST responses of
// Confluent Schema Registry (API of versions 5.x to 7.x) that tide's client
// uses, kept in memory. node registry.mjs [--user USER:PASSWORD] prints
// "127.0.0.1:PORT" once it listens (a free port), and serves:
//   GET  /schemas/ids/{id}                 {"schema": "..."} | 404 40403
//   GET  /subjects/{subject}/versions/latest {"subject","id","version","schema"} | 404 40401
//   POST /subjects/{subject}/versions      {"id"} (the same schema keeps its id)
//   POST /subjects/{subject}               {"subject","id","version","schema"} | 404 40401/40403
// Test controls: PUT /_fixture/down and /_fixture/up (503 to everything
// else while down), GET /_fixture/requests (what was asked, in order).
// Basic auth when --user is given: 401 {"error_code": 401} without it.
import http from "node:http";

const args = process.argv.slice(2);
const user = args[0] === "--user" ? args[1] : null;
const schemas = []; // id - 1 -> schema text
const subjects = new Map(); // subject -> [id, ...] (versions)
const requests = [];
let down = false;

const canonical = (text) => JSON.stringify(JSON.parse(text));
const send = (res, status, body) => {
  res.writeHead(status, { "Content-Type": "application/vnd.schemaregistry.v1+json" });
  res.end(JSON.stringify(body));
};
const fail = (res, status, code, message) => send(res, status, { error_code: code, message });

function idOf(text) {
  const c = canonical(text);
  const i = schemas.findIndex((s) => canonical(s) === c);
  if (i >= 0) return i + 1;
  schemas.push(text);
  return schemas.length;
}

function version(subject, v) {
  const ids = subjects.get(subject);
  const id = ids[v - 1];
  return { subject, id, version: v, schema: schemas[id - 1] };
}

function route(req, res, body) {
  const url = decodeURI(req.url);
  let m;
  if ((m = url.match(/^\/schemas\/ids\/(\d+)$/)) && req.method === "GET") {
    const s = schemas[Number(m[1]) - 1];
    return s ? send(res, 200, { schema: s }) : fail(res, 404, 40403, "Schema not found");
  }
  if ((m = url.match(/^\/subjects\/([^/]+)\/versions\/latest$/)) && req.method === "GET") {
    const ids = subjects.get(m[1]);
    return ids ? send(res, 200, version(m[1], ids.length)) : fail(res, 404, 40401, "Subject not found");
  }
  if ((m = url.match(/^\/subjects\/([^/]+)(\/versions)?$/)) && req.method === "POST") {
    let text;
    try {
      text = JSON.parse(body).schema;
      canonical(text);
    } catch (e) {
      return fail(res, 422, 42201, "Invalid schema");
    }
    const ids = subjects.get(m[1]);
    if (m[2]) {
      const id = idOf(text);
      if (!ids) subjects.set(m[1], [id]);
      else if (!ids.includes(id)) ids.push(id);
      return send(res, 200, { id });
    }
    if (!ids) return fail(res, 404, 40401, "Subject not found");
    const c = canonical(text);
    const v = ids.findIndex((id) => canonical(schemas[id - 1]) === c);
    return v >= 0 ? send(res, 200, version(m[1], v + 1)) : fail(res, 404, 40403, "Schema not found");
  }
  return fail(res, 404, 404, "Not found");
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    if (req.url.startsWith("/_fixture/")) {
      if (req.url === "/_fixture/down") down = true;
      if (req.url === "/_fixture/up") down = false;
      return send(res, 200, req.url === "/_fixture/requests" ? requests : { down });
    }
    requests.push(`${req.method} ${req.url}`);
    if (down) return fail(res, 503, 50003, "Service unavailable (fixture is down)");
    if (user) {
      const auth = req.headers.authorization || "";
      if (auth !== "Basic " + Buffer.from(user).toString("base64")) {
        return fail(res, 401, 401, "Unauthorized");
      }
    }
    route(req, res, body);
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`127.0.0.1:${server.address().port}\n`);
});
// Tests stop it (SIGTERM, or SIGKILL with their process group).
process.on("SIGTERM", () => process.exit(0));
