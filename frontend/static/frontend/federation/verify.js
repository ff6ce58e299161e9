// Checks, in this browser, that a log entry is in the tree the server signed: the page's server-side verdict is
// not taken on trust. WebCrypto SHA-256 recomputes the leaf hash H(0x00 || entry) and folds the audit path to the
// root (RFC 9162 §2.1.3.2); WebCrypto Ed25519 checks the head's signature over its RFC 8785 canonical JSON.
const data = JSON.parse(document.getElementById("inclusion-check").textContent);
const button = document.getElementById("browser-verify");
const verdict = document.getElementById("browser-verdict");

const hex = (text) => Uint8Array.from(text.match(/../g) || [], (pair) => parseInt(pair, 16));
const toHex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const leafHash = (entry) => sha256(concat([0], entry));
const nodeHash = (left, right) => sha256(concat([1], left, right));

// RFC 9162 §2.1.3.2, with BigInt so indices beyond 2^32 stay exact.
async function rootFromPath(leaf, index, size, path) {
  let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
  for (const p of path) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

// The signed object's members in RFC 8785 order (keys sorted; ASCII strings and safe integers only).
function canonicalHead(head) {
  const signed = {key_id: head.key_id, kind: head.kind, root_hash: head.root_hash, timestamp_ms: head.timestamp_ms,
                  tree_size: head.tree_size};
  return new TextEncoder().encode(JSON.stringify(signed));
}

async function check() {
  const head = data.head;
  const entry = Uint8Array.from(atob(data.entry), (c) => c.charCodeAt(0));
  const root = await rootFromPath(await leafHash(entry), data.index, head.tree_size, data.audit_path.map(hex));
  const included = root !== null && toHex(root) === head.root_hash;
  let signed;
  try {
    const key = await crypto.subtle.importKey("raw", hex(data.public_key), {name: "Ed25519"}, false, ["verify"]);
    signed = await crypto.subtle.verify({name: "Ed25519"}, key, hex(head.signature), canonicalHead(head));
  } catch (error) {
    signed = null;  // a browser without WebCrypto Ed25519
  }
  const ok = included && signed === true;
  verdict.className = `alert ${ok ? "alert-ok" : "alert-error"}`;
  verdict.dataset.verdict = ok ? "included" : "failed";
  verdict.textContent = `Browser check: the recomputed root ${included ? "matches" : "does NOT match"} the signed ` +
    `head's, and the head's Ed25519 signature ${signed === null ? "could not be checked (no Ed25519 in this browser)"
      : signed ? "verifies" : "does NOT verify"} with the public key shown.`;
}

button.addEventListener("click", () => { check().catch((error) => { verdict.textContent = `Browser check failed: ${error}`; }); });
