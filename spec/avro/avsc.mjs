// avsc, an independent Avro implementation, on the command line for tide's
// interoperability tests:
//   node avsc.mjs encode SCHEMA.avsc ID   JSON lines -> base64 lines (wire format, schema id ID)
//   node avsc.mjs decode WRITER.avsc [READER.avsc]  base64 lines (wire format) -> JSON lines
// Bytes and fixed values go as JSON strings of code points 0-255 (latin1);
// a decimal's as its number.
import fs from "node:fs";
import readline from "node:readline";
import avro from "avsc";

// decimal (bytes or fixed) <-> number, as tide maps it
class Decimal extends avro.types.LogicalType {
  constructor(attrs, opts) {
    super(attrs, opts);
    this.scale = attrs.scale || 0;
  }
  _fromValue(buf) {
    let v = BigInt.asIntN(buf.length * 8, BigInt("0x" + (buf.toString("hex") || "0")));
    return Number(v) / 10 ** this.scale;
  }
  _toValue(n) {
    let v = BigInt(Math.round(n * 10 ** this.scale));
    const bytes = [];
    do {
      bytes.unshift(Number(v & 0xffn));
      v >>= 8n;
    } while (!((v === 0n && !(bytes[0] & 0x80)) || (v === -1n && bytes[0] & 0x80)));
    const size = this.underlyingType.size;
    while (size && bytes.length < size) bytes.unshift(bytes[0] & 0x80 ? 0xff : 0);
    return Buffer.from(bytes);
  }
  _resolve(type) {
    if (avro.Type.isType(type, "logical:decimal")) return (x) => x;
  }
}

const typeOf = (file) =>
  avro.Type.forSchema(JSON.parse(fs.readFileSync(file, "utf8")), { logicalTypes: { decimal: Decimal } });

// JSON <-> avsc values: Buffers as latin1 strings, unions unwrapped (avsc
// takes a union's value as is with wrapUnions false).
const toJSON = (v) => JSON.stringify(v, (k, x) =>
  x && x.type === "Buffer" && Array.isArray(x.data) ? Buffer.from(x.data).toString("latin1") : x);

function fromJSON(type, v) {
  if (v === null || v === undefined) return v;
  const t = type.typeName;
  if (t === "bytes" || t === "fixed") return Buffer.from(v, "latin1");
  if (t === "record" || t === "error") {
    const out = {};
    for (const f of type.fields) out[f.name] = fromJSON(f.type, v[f.name] === undefined ? null : v[f.name]);
    return out;
  }
  if (t === "array") return v.map((x) => fromJSON(type.itemsType, x));
  if (t === "map") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromJSON(type.valuesType, x)]));
  if (t.startsWith("union")) {
    const branch = type.types.find((b) => b.typeName !== "null" && b.isValid(fromJSON(b, v))) ||
      type.types.find((b) => b.typeName !== "null");
    return fromJSON(branch, v);
  }
  return v;
}

const [cmd, file, arg] = process.argv.slice(2);
const type = typeOf(file);
const lines = readline.createInterface({ input: process.stdin });
if (cmd === "encode") {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(Number(arg), 1);
  for await (const line of lines) {
    if (!line.trim()) continue;
    const body = type.toBuffer(fromJSON(type, JSON.parse(line)));
    console.log(Buffer.concat([head, body]).toString("base64"));
  }
} else if (cmd === "decode") {
  const reader = arg ? typeOf(arg) : type;
  const resolver = reader.createResolver(type);
  for await (const line of lines) {
    if (!line.trim()) continue;
    const buf = Buffer.from(line, "base64");
    if (buf[0] !== 0) throw new Error("not in the wire format");
    console.log(toJSON(reader.fromBuffer(buf.subarray(5), resolver)));
  }
} else {
  console.error("usage: node avsc.mjs encode SCHEMA ID | decode WRITER [READER]");
  process.exit(2);
}
