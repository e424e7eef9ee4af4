// Helpers of the Kafka tests (kafka.test.mjs, kafka-faults.test.mjs): a tansu broker (Kafka-wire-compatible,
// memory storage, on a loopback port, stopped by pid), optionally behind a proxy that can cut clients off
// (kafka-proxy.mjs); the independent producer (kafka_produce.py, confluent-kafka); the ingest config.
// scripts/kafka-tools.sh provides the broker and the producer (TANSU_BIN, KAFKA_PYTHON).

import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { eventually, freePort } from './helpers.mjs';
import { startKafkaProxy } from './kafka-proxy.mjs';

export const TANSU = process.env.TANSU_BIN;
export const PYTHON = process.env.KAFKA_PYTHON;
/** Why the Kafka tests are skipped, or false when they can run. */
export const SKIP = !(TANSU && PYTHON) && 'no broker: run scripts/kafka-tools.sh and set TANSU_BIN, KAFKA_PYTHON';
const PRODUCE = path.join(path.dirname(new URL(import.meta.url).pathname), 'kafka_produce.py');
const CONSUME = path.join(path.dirname(new URL(import.meta.url).pathname), 'kafka_consume.py');
const run = promisify(execFile);

/**
 * A tansu broker with memory storage on a free loopback port. With `proxied`, the broker advertises a proxy
 * (`broker.proxy`, see kafka-proxy.mjs) in front of it, so every client goes through the proxy, reconnections
 * included; `brokers` is then the proxy's address. `pause()` stops the broker process (SIGSTOP: every connection
 * hangs, as with a broker cut off), `resume()` continues it.
 */
export async function startBroker({ proxied = false } = {}) {
  const port = await freePort();
  const proxy = proxied ? await startKafkaProxy(port) : null;
  const url = `tcp://127.0.0.1:${port}`;
  const advertised = proxy ? `tcp://127.0.0.1:${proxy.port}` : url;
  // KAFKA_BROKER_LOG=<file>: the broker's output goes there (with RUST_LOG=info unless set), e.g. its group
  // coordinator's decisions.
  const logFile = process.env.KAFKA_BROKER_LOG;
  const proc = spawn(TANSU, ['broker', '--listener-url', url, '--advertised-listener-url', advertised, '--storage-engine', 'memory://tansu/'], {
    stdio: ['ignore', logFile ? 'pipe' : 'ignore', 'pipe'],
    env: logFile ? { RUST_LOG: 'info', ...process.env } : process.env,
  });
  const log = logFile ? createWriteStream(logFile, { flags: 'a' }) : null;
  proc.stdout?.on('data', (chunk) => log.write(chunk));
  let output = '';
  proc.stderr.on('data', (chunk) => {
    log?.write(chunk);
    output = (output + chunk).slice(-8192);
  });
  await eventually(() => canConnect(port), { timeoutMs: 15_000, what: `tansu on :${port} (${output})` });
  return {
    brokers: `127.0.0.1:${proxy ? proxy.port : port}`,
    proxy,
    pause() {
      proc.kill('SIGSTOP');
    },
    resume() {
      proc.kill('SIGCONT');
    },
    stop() {
      proc.kill('SIGCONT');
      proc.kill('SIGKILL');
      proxy?.close();
    },
  };
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Run kafka_produce.py with `args` (see its usage) to the end; its output, trimmed. */
export async function produce(brokers, topic, args) {
  const { stdout } = await run(PYTHON, [PRODUCE, '--brokers', brokers, '--topic', topic, ...args], { timeout: 60_000 });
  return stdout.trim();
}

/**
 * Start kafka_produce.py with `args` and `--progress` in the background: `acked()` is how many records the broker
 * acknowledged so far, `done` resolves with the total when it exits 0 (rejects otherwise); `kill()` stops it.
 */
export function startProducing(brokers, topic, args) {
  const proc = spawn(PYTHON, [PRODUCE, '--brokers', brokers, '--topic', topic, '--progress', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let acked = 0;
  let pending = '';
  let errors = '';
  proc.stdout.on('data', (chunk) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop();
    for (const line of lines) {
      const m = /^acked (\d+)$/.exec(line);
      if (m) acked = Number(m[1]);
    }
  });
  proc.stderr.on('data', (chunk) => {
    errors = (errors + chunk).slice(-4096);
  });
  const done = new Promise((resolve, reject) => {
    proc.once('exit', (code, signal) => {
      if (code === 0) resolve(acked);
      else reject(new Error(`kafka_produce.py exited (code ${code}, signal ${signal}) after ${acked} records: ${errors}`));
    });
  });
  done.catch(() => {});
  return {
    acked: () => acked,
    done,
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}

/** A `[[kafka.ingest]]` entry. */
export function ingestConfig(brokers, topic, group) {
  return `[[kafka.ingest]]\nbrokers = "${brokers}"\ntopics = ["${topic}"]\ngroup = "${group}"\n`;
}

/** The `n` of every `update` a member got (a `collect`), in order. */
export const numbers = (events) => events.items.map((data) => data.n);

/**
 * Every record of `topic` from its start (until `count` came, or none for `timeout` s), in partition order, as
 * kafka_consume.py (an independent confluent-kafka consumer) prints them: {partition, offset, key, value, headers}.
 */
export async function consume(brokers, topic, count, timeout = 15) {
  const { stdout } = await run(PYTHON, [CONSUME, '--brokers', brokers, '--topic', topic, '--count', String(count), '--timeout', String(timeout)], {
    timeout: 120_000,
    maxBuffer: 64 << 20,
  });
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}
