// Drives sessiond's trigger.dev Sessions surface with the real clients (@trigger.dev/sdk and
// @trigger.dev/core from the npm registry), exactly as an application would: TRIGGER_API_URL and
// TRIGGER_SECRET_KEY point at sessiond, and everything below is the clients' own calls. Records
// the agent would write to `.out` are appended through sessiond's native API.
//
//   node run.mjs <url> <secret-key>   against a running sessiond where <secret-key> is registered
//   node run.mjs                      starts `sessiond serve` (SESSIOND_BIN, default
//                                     ../../target/debug/sessiond) on a free port in open mode
//                                     and registers a key itself
//
// Exits 0 when every check passed; prints one line per check and a summary.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

async function startServer() {
  const bin = process.env.SESSIOND_BIN ?? join(here, "..", "..", "target", "debug", "sessiond");
  const dataDir = mkdtempSync(join(tmpdir(), "sessiond-trigger-"));
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--auth", "off"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise((resolve, reject) => {
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d.toString();
      const m = buf.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1].replace(/\/$/, ""));
    });
    child.on("exit", (code) => reject(new Error(`sessiond exited with ${code}`)));
    setTimeout(() => reject(new Error("sessiond did not start within 30 s")), 30_000);
  });
  const secret = `tr_dev_${Math.random().toString(36).slice(2).padEnd(24, "0")}`;
  const r = await fetch(`${url}/v1/accounts/00000000-0000-0000-0000-000000000000/keys`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key: secret, name: "trigger client test" }),
  });
  assert.equal(r.status, 201, await r.text());
  const stop = () => {
    child.kill();
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { url, secret, stop };
}

let server;
let [url, secret] = process.argv.slice(2);
if (!url) {
  server = await startServer();
  ({ url, secret } = server);
}
// Exactly what an application sets.
process.env.TRIGGER_API_URL = url;
process.env.TRIGGER_SECRET_KEY = secret;

const { sessions, auth } = await import("@trigger.dev/sdk");
const { apiClientManager, ApiError } = await import("@trigger.dev/core/v3");

const results = [];
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`not ok - ${name}\n  ${(e && e.stack) || e}`);
  }
}

/** The status of a rejected client call. */
async function statusOf(promise) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof ApiError || typeof e?.status === "number") return e.status;
    throw e;
  }
  throw new Error("the call succeeded");
}

const nativeId = (friendly) => {
  const h = friendly.replace(/^session_/, "");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/** Appends records to a native channel the way an agent (or any native client) would. */
async function nativeAppend(friendly, channel, records) {
  const r = await fetch(`${url}/v1/sessions/${nativeId(friendly)}/channels/${channel}/records`, {
    method: "POST",
    headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify({ records }),
  });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  return JSON.parse(text);
}

/** Reads `.out` with the client until `want` chunks arrived or the stream ended. */
async function readOut(handle, options, want = Infinity, during) {
  const controller = new AbortController();
  let lastEventId;
  const stream = await handle.out.read({
    ...options,
    signal: controller.signal,
    onPart: (part) => {
      lastEventId = part.id;
    },
  });
  const chunks = [];
  const duringDone = during ? during() : Promise.resolve();
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (chunks.length >= want) {
      controller.abort();
      break;
    }
  }
  await duringDone;
  return { chunks, lastEventId };
}

const run = Date.now().toString(36);
const ext = `client-chat-${run}`;
const type = `client-test-${run}`;
let started;
let handle;

try {
  await check("sessions.start creates a session and its first run", async () => {
    started = await sessions.start({
      type,
      externalId: ext,
      taskIdentifier: "client-agent",
      triggerConfig: { basePayload: { chatId: ext }, maxAttempts: 3 },
      tags: ["client", "first"],
      metadata: { user: "u1" },
    });
    assert.equal(started.isCached, false);
    assert.match(started.id, /^session_[0-9a-f]{32}$/);
    assert.match(started.runId, /^run_[0-9a-f]{32}$/);
    assert.equal(started.currentRunId, started.runId);
    assert.equal(started.externalId, ext);
    assert.equal(started.taskIdentifier, "client-agent");
    assert.deepEqual(started.triggerConfig.basePayload, { chatId: ext });
    assert.ok(started.createdAt instanceof Date);
    assert.equal(typeof started.publicAccessToken, "string");
    handle = sessions.open(started.id);
  });

  await check("sessions.start again is cached", async () => {
    const again = await sessions.start({
      type,
      externalId: ext,
      taskIdentifier: "client-agent",
      triggerConfig: { basePayload: { chatId: ext, refreshed: true } },
    });
    assert.equal(again.isCached, true);
    assert.equal(again.id, started.id);
    assert.equal(again.runId, started.runId);
    assert.deepEqual(again.triggerConfig.basePayload, { chatId: ext, refreshed: true });
  });

  await check("sessions.retrieve by friendly id and by externalId", async () => {
    const a = await sessions.retrieve(started.id);
    const b = await sessions.retrieve(ext);
    assert.equal(a.id, started.id);
    assert.equal(b.id, started.id);
    assert.deepEqual(a.tags, ["client", "first"]);
    assert.deepEqual(a.metadata, { user: "u1" });
    assert.equal(a.closedAt, null);
    assert.equal(a.currentRunId, started.runId);
    assert.equal(await statusOf(sessions.retrieve(`missing-${run}`)), 404);
  });

  await check("sessions.list filters and pages", async () => {
    for (const i of [1, 2]) {
      await sessions.start({
        type,
        externalId: `${ext}-extra-${i}`,
        taskIdentifier: i === 1 ? "client-agent" : "other-agent",
        triggerConfig: { basePayload: {} },
        tags: [`extra-${i}`],
      });
    }
    const all = [];
    for await (const s of sessions.list({ type, limit: 1 })) all.push(s.externalId);
    assert.deepEqual(all, [`${ext}-extra-2`, `${ext}-extra-1`, ext]);
    const page1 = await sessions.list({ type, limit: 2 });
    assert.deepEqual(page1.data.map((s) => s.externalId), [`${ext}-extra-2`, `${ext}-extra-1`]);
    assert.ok(page1.hasNextPage());
    assert.ok(!page1.hasPreviousPage());
    const page2 = await page1.getNextPage();
    assert.deepEqual(page2.data.map((s) => s.externalId), [ext]);
    assert.ok(!page2.hasNextPage());
    // `page2.getPreviousPage()` would send page[after] (kept from the call that fetched page2)
    // together with page[before], which the API refuses (400) — on trigger.dev too; ask for
    // the previous page the way that works.
    assert.ok(page2.hasPreviousPage());
    const back = await sessions.list({ type, limit: 2, before: page2.pagination.previous });
    assert.deepEqual(back.data.map((s) => s.externalId), [`${ext}-extra-2`, `${ext}-extra-1`]);
    assert.ok(!back.hasPreviousPage());
    assert.equal(await statusOf(page2.getPreviousPage()), 400);
    const tagged = await sessions.list({ type, tag: ["extra-1", "first"] });
    assert.deepEqual(tagged.data.map((s) => s.externalId).sort(), [ext, `${ext}-extra-1`].sort());
    const byTask = await sessions.list({ taskIdentifier: "other-agent", type });
    assert.deepEqual(byTask.data.map((s) => s.externalId), [`${ext}-extra-2`]);
    const byExt = await sessions.list({ externalId: ext, status: ["ACTIVE"], period: "1h" });
    assert.deepEqual(byExt.data.map((s) => s.id), [started.id]);
    const closedOnes = await sessions.list({ type, status: "CLOSED" });
    assert.equal(closedOnes.data.length, 0);
    const since = await sessions.list({ type, from: new Date(Date.now() - 60_000), to: new Date() });
    assert.equal(since.data.length, 3);
  });

  await check("sessions.update replaces tags and metadata; externalId is immutable", async () => {
    const u = await sessions.update(started.id, { tags: ["updated"], metadata: { user: "u2", n: 1 } });
    assert.deepEqual(u.tags, ["updated"]);
    assert.deepEqual(u.metadata, { user: "u2", n: 1 });
    const same = await sessions.update(ext, { externalId: ext });
    assert.deepEqual(same.tags, ["updated"]);
    assert.equal(await statusOf(sessions.update(ext, { externalId: `${ext}-renamed` })), 422);
  });

  await check(".in.send appends to the in channel (and the drain reads it)", async () => {
    await handle.in.send("hello from the client");
    await sessions.open(ext).in.send({ kind: "message", text: "structured" });
    const api = apiClientManager.clientOrThrow();
    const { records } = await api.readSessionStreamRecords(started.id, "in", { afterEventId: "0" });
    assert.deepEqual(
      records.map((r) => r.data),
      ["hello from the client", JSON.stringify({ kind: "message", text: "structured" })],
    );
    assert.deepEqual(records.map((r) => r.seqNum), [1, 2]);
  });

  let lastEventId;
  await check(".out.read receives records appended through the native API", async () => {
    await nativeAppend(started.id, "out", [
      { id: "out-1", data: { type: "text-delta", delta: "Hel" } },
      { id: "out-2", data: { type: "text-delta", delta: "lo" } },
    ]);
    const got = await readOut(handle, { timeoutInSeconds: 5 }, 2);
    assert.deepEqual(got.chunks, [
      { type: "text-delta", delta: "Hel" },
      { type: "text-delta", delta: "lo" },
    ]);
    assert.equal(got.lastEventId, "2");
    lastEventId = got.lastEventId;
  });

  await check(".out.read resumes after a reconnect with lastEventId", async () => {
    await nativeAppend(started.id, "out", [{ id: "out-3", data: { type: "text-delta", delta: "!" } }]);
    const got = await readOut(sessions.open(ext), { timeoutInSeconds: 1, lastEventId });
    assert.deepEqual(got.chunks, [{ type: "text-delta", delta: "!" }]);
    lastEventId = got.lastEventId;
    assert.equal(lastEventId, "3");
  });

  await check(".out.read delivers live records while it is open", async () => {
    const got = await readOut(handle, { timeoutInSeconds: 5, lastEventId }, 1, async () => {
      await new Promise((r) => setTimeout(r, 300));
      await nativeAppend(started.id, "out", [{ id: "out-4", data: { type: "finish" } }]);
    });
    assert.deepEqual(got.chunks, [{ type: "finish" }]);
    assert.equal(got.lastEventId, "4");
  });

  await check("readSessionStreamRecords drains .out after an event id", async () => {
    const api = apiClientManager.clientOrThrow();
    const all = await api.readSessionStreamRecords(started.id, "out");
    assert.equal(all.records.length, 4);
    assert.deepEqual(all.records[0], { data: { type: "text-delta", delta: "Hel" }, id: "out-1", seqNum: 1 });
    const tail = await api.readSessionStreamRecords(ext, "out", { afterEventId: "3" });
    assert.deepEqual(tail.records.map((r) => r.seqNum), [4]);
  });

  await check("the start's public access token reads the session and sends to .in", async () => {
    await auth.withAuth({ accessToken: started.publicAccessToken }, async () => {
      const s = await sessions.retrieve(ext);
      assert.equal(s.id, started.id);
      await sessions.open(ext).in.send("from the browser");
      const got = await readOut(sessions.open(ext), { timeoutInSeconds: 1, lastEventId: "3" });
      assert.deepEqual(got.chunks, [{ type: "finish" }]);
      assert.equal(await statusOf(sessions.retrieve(`${ext}-extra-1`)), 403);
      assert.equal(await statusOf(sessions.close(ext)), 403);
    });
  });

  await check("auth.createPublicToken signs a token the server verifies", async () => {
    const token = await auth.createPublicToken({
      scopes: { read: { sessions: [ext] } },
      expirationTime: "10m",
    });
    await auth.withAuth({ accessToken: token }, async () => {
      const s = await sessions.retrieve(ext);
      assert.equal(s.id, started.id);
      assert.equal(await statusOf(sessions.retrieve(`${ext}-extra-2`)), 403);
    });
  });

  await check("sessions.close is terminal and idempotent", async () => {
    const closed = await sessions.close(started.id, { reason: "done" });
    assert.ok(closed.closedAt instanceof Date);
    assert.equal(closed.closedReason, "done");
    const again = await sessions.close(ext);
    assert.equal(again.closedAt.getTime(), closed.closedAt.getTime());
    assert.equal(
      await statusOf(
        sessions.start({ type, externalId: ext, taskIdentifier: "client-agent", triggerConfig: { basePayload: {} } }),
      ),
      409,
    );
    // Reads keep working after the close.
    const got = await readOut(handle, { timeoutInSeconds: 1, lastEventId: "2" });
    assert.equal(got.chunks.length, 2);
    const closedList = await sessions.list({ type, status: "CLOSED" });
    assert.deepEqual(closedList.data.map((s) => s.id), [started.id]);
  });
} finally {
  server?.stop();
}

const passed = results.filter(([, ok]) => ok).length;
const failed = results.length - passed;
console.log(`trigger client: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
