// node --test: the SDK's operation queue (appliance/api/static/sdk/edgecall.js), the part of the
// client with no browser in it. tests/unit/test_sdk_queue.py runs this file.
import { test } from "node:test";
import assert from "node:assert/strict";

import { OperationQueue } from "../../../appliance/api/static/sdk/edgecall.js";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

// A task that records when it starts and ends, and waits until released.
function gate(log, name) {
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  const task = async () => {
    log.push(`start ${name}`);
    await released;
    log.push(`end ${name}`);
    return name;
  };
  return { task, release };
}

test("tasks run one at a time, in order, each with its own result", async () => {
  const queue = new OperationQueue();
  const log = [];
  const a = gate(log, "a");
  const b = gate(log, "b");
  const results = [queue.run(a.task), queue.run(b.task)];
  await tick();
  assert.deepEqual(log, ["start a"]);
  b.release();
  await tick();
  assert.deepEqual(log, ["start a"], "b must wait for a even when it could finish");
  a.release();
  assert.deepEqual(await Promise.all(results), ["a", "b"]);
  assert.deepEqual(log, ["start a", "end a", "start b", "end b"]);
});

test("a failing task rejects its own promise and the queue goes on", async () => {
  const queue = new OperationQueue();
  const failed = queue.run(async () => { throw new Error("boom"); });
  const next = queue.run(async () => "next");
  await assert.rejects(failed, /boom/);
  assert.equal(await next, "next");
});

test("first goes ahead of waiting tasks but not of the running one", async () => {
  const queue = new OperationQueue();
  const log = [];
  const running = gate(log, "running");
  const started = queue.run(running.task);
  await tick();
  const waiting = queue.run(async () => log.push("waiting"));
  const urgent = queue.first(async () => log.push("urgent"));
  running.release();
  await Promise.all([started, waiting, urgent]);
  assert.deepEqual(log, ["start running", "end running", "urgent", "waiting"]);
});

test("items asked for in one tick share one batch; each gets its own result or error", async () => {
  const queue = new OperationQueue();
  const calls = [];
  const task = async (items) => {
    calls.push([...items]);
    return items.map((item) => (item === "bad" ? new Error(`refused ${item}`) : `done ${item}`));
  };
  const results = ["x", "bad", "y"].map((item) => queue.batch("pull", item, task));
  assert.equal(await results[0], "done x");
  await assert.rejects(results[1], /refused bad/);
  assert.equal(await results[2], "done y");
  assert.deepEqual(calls, [["x", "bad", "y"]]);
});

test("a batch that started takes no more items; a waiting one takes them", async () => {
  const queue = new OperationQueue();
  const log = [];
  const blocker = gate(log, "blocker");
  const calls = [];
  const task = async (items) => { calls.push([...items]); return items; };
  const blocked = queue.run(blocker.task);
  await tick();
  const first = [queue.batch("pull", 1, task), queue.batch("pull", 2, task)];
  await tick();
  const later = queue.batch("pull", 3, task); // joins: the batch still waits behind the blocker
  blocker.release();
  await Promise.all([blocked, ...first, later]);
  const after = await queue.batch("pull", 4, task); // the batch ran: a new one
  assert.equal(after, 4);
  assert.deepEqual(calls, [[1, 2, 3], [4]]);
});

test("a batch joins only while it is the last task waiting, so order is kept", async () => {
  const queue = new OperationQueue();
  const log = [];
  const blocker = gate(log, "blocker");
  const task = async (items) => { log.push(`pull ${items.join(",")}`); return items; };
  queue.run(blocker.task);
  await tick();
  const pulls = [queue.batch("pull", "a", task)];
  const close = queue.run(async () => log.push("close"));
  pulls.push(queue.batch("pull", "b", task)); // behind the close: a batch of its own
  blocker.release();
  await Promise.all([...pulls, close]);
  assert.deepEqual(log, ["start blocker", "end blocker", "pull a", "close", "pull b"]);
});

test("a batch whose task throws rejects every item of it", async () => {
  const queue = new OperationQueue();
  const task = async () => { throw new Error("HTTP 500"); };
  const results = [queue.batch("push", 1, task), queue.batch("push", 2, task)];
  for (const result of results) await assert.rejects(result, /HTTP 500/);
});
