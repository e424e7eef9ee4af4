// The deployment files of deploy/ checked against each other and against the server, since no container
// runtime or Kubernetes cluster runs them here: every YAML file parses; the Dockerfile's stages, user, COPY
// sources (present in the repository and in the build context .dockerignore leaves) and EXPOSEd ports; every
// name and port one file takes from another (compose services ↔ nginx upstreams, Sentinel URLs and monitor
// lines, tidings.toml's listen ports ↔ EXPOSE, container ports, probes, Service, Ingress; Service, PDB and
// Deployment selectors ↔ pod labels; the ConfigMap generator ↔ its mount ↔ TIDINGS_CONFIG); grace periods
// longer than the drain; and the server itself: it accepts tidings.toml (and refuses it with an unknown key),
// answers the probes' paths, and exports the series the HPA's metric is made from.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { io } from 'socket.io-client';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { API_KEY, REPO_ROOT, SECRET, TIDINGS_BIN, eventually, freePort, sleep, token } from './helpers.mjs';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (...p) => readFileSync(path.join(...p), 'utf8');
const tmp = mkdtempSync(path.join(tmpdir(), 'tidings-deploy-lint-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------- readers

/** The simple TOML of deploy/config/tidings.toml: {section: {key: value}} ('' = top level). */
function readToml(text) {
  const out = { '': {} };
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+#.*$/, '').trim();
    if (!line || line.startsWith('#')) continue;
    const head = /^\[([\w.]+)\]$/.exec(line);
    if (head) {
      section = head[1];
      out[section] ??= {};
      continue;
    }
    const kv = /^(\w+)\s*=\s*(.+)$/.exec(line);
    assert.ok(kv, `tidings.toml: cannot read line ${JSON.stringify(raw)}`);
    out[section][kv[1]] = JSON.parse(kv[2]); // strings, numbers, booleans and string arrays are JSON too
  }
  return out;
}

const portOf = (addr) => Number(/:(\d+)$/.exec(addr)[1]);
const toml = readToml(read(DEPLOY, 'config', 'tidings.toml'));
const LISTEN_PORT = portOf(toml[''].listen);
const ADMIN_PORT = portOf(toml.admin.listen);
const DRAIN_SECS = toml.shutdown.drain_secs;

/** Hosts and ports of a redis+sentinel:// URL, and the master's name. */
function sentinelUrl(url) {
  const m = /^redis\+sentinel:\/\/([^/]+)\/(\w+)$/.exec(url);
  assert.ok(m, `not a redis+sentinel:// URL: ${url}`);
  return { hosts: m[1].split(',').map((h) => ({ host: h.split(':')[0], port: Number(h.split(':')[1]) })), master: m[2] };
}

/** nginx's `upstream NAME { server host:port ...; }` blocks: {NAME: [{host, port}]}. */
function nginxUpstreams(text) {
  const out = {};
  for (const m of text.matchAll(/upstream\s+(\w+)\s*\{([^}]*)\}/g)) {
    out[m[1]] = [...m[2].matchAll(/^\s*server\s+([\w.-]+):(\d+)/gm)].map((s) => ({ host: s[1], port: Number(s[2]) }));
  }
  return out;
}

/** nginx config without its comments. */
const uncommented = (text) => text.replace(/#.*$/gm, '');

/** Seconds of a compose duration ("40s", "1m30s"). */
function seconds(duration) {
  let total = 0;
  for (const [, n, unit] of String(duration).matchAll(/(\d+)(h|m|s)/g)) total += Number(n) * { h: 3600, m: 60, s: 1 }[unit];
  return total;
}

/** Every file of the repository that git knows, relative to its root. */
const repoFiles = execFileSync('git', ['ls-files'], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);

/** .dockerignore: is `rel` (a path in the build context) sent to the builder? The last matching rule wins. */
function inBuildContext(rel) {
  const rules = read(REPO_ROOT, '.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const glob = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      const re = glob
        .split('/')
        .map((part) => (part === '**' ? '.*' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '[^/]*').replaceAll('?', '[^/]')))
        .join('/');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  // A rule that matches a directory covers everything below it.
  const parts = rel.split('/');
  let included = true;
  for (const rule of rules) {
    for (let i = 1; i <= parts.length; i++) {
      if (rule.re.test(parts.slice(0, i).join('/'))) {
        included = rule.negate;
        break;
      }
    }
  }
  return included;
}

/** The Dockerfile as instructions: [{op, args, line}] with continuation lines joined. */
function dockerInstructions(text) {
  const out = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    if (!buf && (raw.trim().startsWith('#') || !raw.trim())) return;
    if (!buf) start = i + 1;
    buf += raw.replace(/\\$/, ' ');
    if (raw.endsWith('\\')) return;
    const m = /^\s*(\w+)\s+(.*)$/.exec(buf);
    out.push({ op: m[1].toUpperCase(), args: m[2].trim(), line: start });
    buf = '';
  });
  return out;
}

const compose = parseYaml(read(DEPLOY, 'docker-compose.yml'), { merge: true });
const kustomization = parseYaml(read(DEPLOY, 'kustomization.yaml'));
const k8s = kustomization.resources.flatMap((r) => parseAllDocuments(read(DEPLOY, r)).map((d) => d.toJS()));
const ofKind = (kind) => {
  const found = k8s.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `one ${kind} among the kustomization's resources`);
  return found[0];
};
const deployment = ofKind('Deployment');
const podSpec = deployment.spec.template.spec;
const container = podSpec.containers.find((c) => c.name === 'tidings');
const envOf = (c, name) => c.env.find((e) => e.name === name);
const dockerfile = dockerInstructions(read(DEPLOY, 'Dockerfile'));

/** `labels` holds every pair of `selector`. */
function selects(selector, labels, what) {
  assert.ok(selector && Object.keys(selector).length > 0, `${what}: empty selector`);
  for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `${what}: selector ${k}=${v} does not match the pod labels ${JSON.stringify(labels)}`);
}

// ---------------------------------------------------------------------------------------------------- tests

describe('deploy: files checked against each other', () => {
  test('every YAML file of deploy/ parses', () => {
    const files = [];
    const walk = (dir) => {
      for (const f of readdirSync(dir)) {
        const p = path.join(dir, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (/\.ya?ml$/.test(f)) files.push(p);
      }
    };
    walk(DEPLOY);
    assert.ok(files.length >= 8, `YAML files found: ${files}`);
    for (const f of files) {
      for (const doc of parseAllDocuments(readFileSync(f, 'utf8'))) {
        assert.deepEqual(doc.errors.map(String), [], `${path.relative(REPO_ROOT, f)}: parse errors`);
        assert.deepEqual(doc.warnings.map(String), [], `${path.relative(REPO_ROOT, f)}: warnings`);
        assert.ok(doc.toJS() !== null, `${path.relative(REPO_ROOT, f)}: an empty document`);
      }
    }
  });

  test('Dockerfile: stages, non-root user, COPY sources in the repository and the build context, EXPOSE, STOPSIGNAL', () => {
    const stages = [];
    const copied = [];
    for (const ins of dockerfile) {
      if (ins.op === 'FROM') {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
        stages.push({ image: m[1], name: m[2], ops: [] });
        continue;
      }
      if (ins.op === 'ARG' && stages.length === 0) continue;
      assert.ok(stages.length, `line ${ins.line}: ${ins.op} before FROM`);
      stages.at(-1).ops.push(ins);
      if (ins.op !== 'COPY') continue;
      const words = ins.args.split(/\s+/);
      const flags = words.filter((w) => w.startsWith('--'));
      const [dest, ...sources] = words.filter((w) => !w.startsWith('--')).reverse();
      const from = flags.find((f) => f.startsWith('--from='))?.slice(7);
      if (from) {
        const earlier = stages.slice(0, -1).map((s) => s.name);
        assert.ok(earlier.includes(from), `line ${ins.line}: COPY --from=${from} names no earlier stage (${earlier})`);
        continue;
      }
      for (const src of sources.reverse()) {
        assert.ok(existsSync(path.join(REPO_ROOT, src)), `line ${ins.line}: COPY source ${src} is not in the repository`);
        const files = repoFiles.filter((f) => f === src || f.startsWith(`${src.replace(/\/$/, '')}/`));
        assert.ok(files.length, `line ${ins.line}: COPY source ${src} holds no tracked file`);
        const left = files.filter((f) => !inBuildContext(f));
        assert.deepEqual(left, [], `line ${ins.line}: .dockerignore keeps ${src} out of the build context`);
        copied.push({ src, dest, stage: stages.at(-1) });
      }
    }
    assert.ok(stages.length >= 2, 'a multi-stage build');
    const runtime = stages.at(-1);
    const user = runtime.ops.filter((o) => o.op === 'USER').at(-1);
    assert.ok(user, 'the runtime stage sets USER');
    assert.ok(!/^(root|0)(:|$)/.test(user.args), `USER ${user.args} is root`);
    const exposed = runtime.ops.filter((o) => o.op === 'EXPOSE').flatMap((o) => o.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
    assert.ok(exposed.includes(LISTEN_PORT), `EXPOSE ${exposed} lacks tidings.toml's listen port ${LISTEN_PORT}`);
    assert.ok(exposed.includes(ADMIN_PORT), `EXPOSE ${exposed} lacks tidings.toml's [admin] listen port ${ADMIN_PORT}`);
    assert.equal(runtime.ops.find((o) => o.op === 'STOPSIGNAL')?.args, 'SIGTERM');
    // The config the image carries is where TIDINGS_CONFIG points, and it is deploy/config/tidings.toml.
    const env = runtime.ops.filter((o) => o.op === 'ENV').map((o) => o.args).join(' ');
    const configPath = /TIDINGS_CONFIG=(\S+)/.exec(env)?.[1];
    assert.ok(configPath, 'the runtime stage sets TIDINGS_CONFIG');
    assert.ok(copied.some((c) => c.src === 'deploy/config/tidings.toml' && c.dest === configPath), `tidings.toml is not copied to ${configPath}`);
    // The builder has every file the crate compiles in: sources and whatever include_bytes!/include_str! reads.
    const builderCopies = copied.filter((c) => c.stage === stages[0]).map((c) => c.src.replace(/\/$/, ''));
    for (const f of repoFiles.filter((f) => f.startsWith('src/') && f.endsWith('.rs'))) {
      for (const m of read(REPO_ROOT, f).matchAll(/include_(?:bytes|str)!\(\s*"([^"]+)"\s*\)/g)) {
        const target = path.relative(REPO_ROOT, path.resolve(path.dirname(path.join(REPO_ROOT, f)), m[1]));
        assert.ok(
          builderCopies.some((c) => target === c || target.startsWith(`${c}/`)),
          `${f} includes ${target}, which the builder stage does not copy (${builderCopies})`,
        );
      }
    }
    // Cargo reads the file of every target Cargo.toml declares, and builds the package's binary.
    const manifest = read(REPO_ROOT, 'Cargo.toml');
    assert.ok(builderCopies.includes('Cargo.toml') && builderCopies.includes('Cargo.lock'), 'the builder copies Cargo.toml and Cargo.lock');
    for (const [, kind, name] of manifest.matchAll(/^\[\[(bench|bin|example|test)\]\]\s*\nname = "([^"]+)"/gm)) {
      const dir = { bench: 'benches', bin: 'src/bin', example: 'examples', test: 'tests' }[kind];
      assert.ok(builderCopies.some((c) => `${dir}/${name}.rs`.startsWith(`${c}/`)), `Cargo.toml declares ${kind} ${name}; the builder does not copy ${dir}/`);
    }
    const build = stages[0].ops.find((o) => o.op === 'RUN' && o.args.includes('cargo build'));
    assert.match(build.args, /--release/);
    assert.match(build.args, /--locked/);
    const pkg = /^\[package\]\s*\nname = "([^"]+)"/m.exec(manifest)[1];
    assert.match(build.args, new RegExp(`--bin ${pkg}\\b`), 'the builder builds the package binary');
    assert.ok(build.args.includes(`target/release/${pkg}`), 'the builder copies the binary it built');
  });

  test('docker-compose: nginx upstreams, Sentinel names, ports, mounts, healthchecks, grace periods', () => {
    const services = compose.services;
    const nodes = Object.entries(services).filter(([, s]) => s.build);
    assert.equal(nodes.length, 3, 'three tidings nodes built from the Dockerfile');
    for (const [, s] of nodes) {
      assert.ok(existsSync(path.join(DEPLOY, s.build.context, s.build.dockerfile)), `build: ${s.build.context}/${s.build.dockerfile} missing`);
    }

    // nginx: every upstream server is a tidings node at its listen port, and every node is upstream.
    const conf = uncommented(read(DEPLOY, 'nginx', 'tidings.conf'));
    const upstreams = nginxUpstreams(conf);
    const servers = Object.values(upstreams).flat();
    assert.deepEqual(servers.map((s) => s.host).sort(), nodes.map(([n]) => n).sort(), 'nginx upstream servers ≠ the compose nodes');
    for (const s of servers) assert.equal(s.port, LISTEN_PORT, `upstream ${s.host}:${s.port} is not tidings.toml's listen port`);
    assert.doesNotMatch(conf, /\b(ip_hash|hash|sticky)\b/, 'no sticky sessions');
    const locations = uncommented(read(DEPLOY, 'nginx', 'tidings-locations.conf'));
    for (const name of Object.keys(upstreams)) assert.match(locations, new RegExp(`proxy_pass http://${name};`));
    assert.match(locations, /proxy_set_header Upgrade \$http_upgrade;/);
    assert.match(locations, /proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/);
    assert.match(locations, /proxy_next_upstream error timeout http_503;/);
    // The nodes trust nginx's X-Forwarded-For: compose networks are in these private ranges.
    assert.ok(toml.limits.trusted_proxies.length > 0, 'limits.trusted_proxies is empty: the per-address limits would count nginx as the only client');

    const nginx = services.nginx;
    const mounts = Object.fromEntries(nginx.volumes.map((v) => v.split(':')).map(([src, dst]) => [dst, src]));
    assert.ok(Object.values(mounts).includes('./nginx/tidings.conf'));
    for (const m of [...conf.matchAll(/(?:include|ssl_certificate(?:_key)?)\s+(\/etc\/nginx\/\S+);/g)].map((x) => x[1])) {
      const dst = Object.keys(mounts).find((d) => m === d || m.startsWith(`${d}/`));
      assert.ok(dst, `nginx reads ${m}, which no volume of the nginx service mounts`);
      if (!m.includes('/tls/')) assert.ok(existsSync(path.join(DEPLOY, mounts[dst])), `${mounts[dst]} missing`);
    }
    for (const dep of Object.keys(nginx.depends_on)) assert.ok(services[dep], `nginx depends on unknown service ${dep}`);

    // Each node: its public URL is its own name at the listen port, its config is tidings.toml at
    // TIDINGS_CONFIG, its healthcheck asks /readyz, and it gets longer than the drain to stop.
    for (const [name, s] of nodes) {
      assert.equal(s.environment.TIDINGS_PUBLIC_URL, `http://${name}:${LISTEN_PORT}`, `${name}: TIDINGS_PUBLIC_URL`);
      const cfg = s.volumes.map((v) => v.split(':')).find(([, dst]) => dst === s.environment.TIDINGS_CONFIG);
      assert.ok(cfg, `${name}: nothing mounted at TIDINGS_CONFIG ${s.environment.TIDINGS_CONFIG}`);
      assert.equal(cfg[0], './config/tidings.toml');
      const check = s.healthcheck.test.join(' ');
      assert.match(check, /\/readyz/, `${name}: the healthcheck does not ask /readyz`);
      assert.match(check, new RegExp(`/${LISTEN_PORT}\\b`), `${name}: the healthcheck does not use the listen port`);
      assert.ok(seconds(s.stop_grace_period) > DRAIN_SECS, `${name}: stop_grace_period ${s.stop_grace_period} ≤ drain_secs ${DRAIN_SECS}`);
      assert.equal(s.stop_signal, 'SIGTERM');
      for (const dep of Object.keys(s.depends_on)) assert.ok(services[dep], `${name} depends on unknown service ${dep}`);
    }

    // Redis: tidings.toml's Sentinels are compose services running redis-sentinel on those ports, and they
    // monitor a compose service running redis-server at the port it listens on, under the URL's master name.
    const commandOf = (s) => (Array.isArray(s.command) ? s.command.join(' ') : String(s.command));
    const url = sentinelUrl(toml.redis.url);
    assert.equal(url.hosts.length, 3);
    for (const { host, port } of url.hosts) {
      assert.ok(services[host], `tidings.toml names Sentinel ${host}, which is no compose service`);
      assert.match(commandOf(services[host]), new RegExp(`redis-sentinel .*--port ${port}\\b`), `${host}: not a Sentinel on port ${port}`);
      const conf = services[host].volumes.map((v) => v.split(':')).find(([src]) => src === './config/sentinel.conf');
      assert.ok(conf, `${host} does not mount config/sentinel.conf`);
      assert.ok(commandOf(services[host]).includes(conf[1]), `${host} does not start from the mounted ${conf[1]}`);
    }
    const monitor = /^sentinel monitor (\S+) (\S+) (\d+) (\d+)$/m.exec(read(DEPLOY, 'config', 'sentinel.conf'));
    assert.ok(monitor, 'sentinel.conf has a monitor line');
    assert.equal(monitor[1], url.master, 'the master name of sentinel.conf ≠ the one in tidings.toml');
    const master = services[monitor[2]];
    assert.ok(master, `sentinel.conf monitors ${monitor[2]}, which is no compose service`);
    assert.match(commandOf(master), new RegExp(`redis-server .*--port ${monitor[3]}\\b`));
    assert.ok(Number(monitor[4]) > url.hosts.length / 2, 'the Sentinel quorum is a majority');
    const replicas = Object.entries(services).filter(([, s]) => /--replicaof/.test(commandOf(s)));
    assert.equal(replicas.length, 1, 'one replica');
    assert.match(commandOf(replicas[0][1]), new RegExp(`--replicaof ${monitor[2]} ${monitor[3]}\\b`));
    for (const [, s] of [[monitor[2], master], ...replicas]) {
      assert.ok(s.volumes.some((v) => v.startsWith('./config/redis.conf:')), 'Redis servers start from config/redis.conf');
    }
  });

  test('Kubernetes: kustomization, selectors and labels, ports, probes, ConfigMap mount, Secrets, grace period, HPA, Ingress', () => {
    for (const r of kustomization.resources) assert.ok(existsSync(path.join(DEPLOY, r)), `kustomization resource ${r} missing`);
    const labels = deployment.spec.template.metadata.labels;
    selects(deployment.spec.selector.matchLabels, labels, 'Deployment');
    const service = ofKind('Service');
    selects(service.spec.selector, labels, 'Service');
    selects(ofKind('PodDisruptionBudget').spec.selector.matchLabels, labels, 'PodDisruptionBudget');
    for (const c of podSpec.topologySpreadConstraints ?? []) selects(c.labelSelector.matchLabels, labels, 'topologySpreadConstraints');

    // Ports: the container's are tidings.toml's, the Service and the probes name them.
    const ports = Object.fromEntries(container.ports.map((p) => [p.name, p.containerPort]));
    assert.equal(ports.http, LISTEN_PORT, 'container port http ≠ tidings.toml listen');
    assert.equal(ports.metrics, ADMIN_PORT, 'container port metrics ≠ tidings.toml [admin] listen');
    assert.equal(Number(deployment.spec.template.metadata.annotations['prometheus.io/port']), ADMIN_PORT);
    for (const p of service.spec.ports) assert.ok(p.targetPort in ports || Object.values(ports).includes(p.targetPort), `Service targetPort ${p.targetPort}`);
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      assert.equal(ports[probe.httpGet.port] ?? probe.httpGet.port, LISTEN_PORT, 'probes ask the main port (where /readyz is)');
    }

    // The ConfigMap: generated from tidings.toml, mounted where TIDINGS_CONFIG points.
    const gen = kustomization.configMapGenerator.find((g) => g.files);
    const [key, file] = gen.files[0].split('=');
    assert.ok(existsSync(path.join(DEPLOY, file)), `configMapGenerator file ${file}`);
    assert.equal(path.join(DEPLOY, file), path.join(DEPLOY, 'config', 'tidings.toml'), 'the ConfigMap is made from the shared tidings.toml');
    const volume = podSpec.volumes.find((v) => v.configMap?.name === gen.name);
    assert.ok(volume, `no volume of ConfigMap ${gen.name}`);
    const item = volume.configMap.items.find((i) => i.key === key);
    assert.ok(item, `the volume does not project key ${key}`);
    const mount = container.volumeMounts.find((m) => m.name === volume.name);
    assert.ok(mount, `volume ${volume.name} is not mounted`);
    assert.equal(path.posix.join(mount.mountPath, item.path), envOf(container, 'TIDINGS_CONFIG').value, 'TIDINGS_CONFIG ≠ where the ConfigMap is mounted');

    // Secrets: the JWT secret and the API key come from one Secret, never from a literal.
    const secretRefs = ['TIDINGS_JWT_SECRET', 'TIDINGS_API_KEY'].map((n) => envOf(container, n));
    for (const e of secretRefs) assert.ok(e?.valueFrom?.secretKeyRef, `${e?.name} does not come from a Secret`);
    assert.equal(new Set(secretRefs.map((e) => e.valueFrom.secretKeyRef.name)).size, 1);
    const createHint = read(DEPLOY, 'kustomization.yaml');
    for (const e of secretRefs) {
      assert.ok(createHint.includes(`secret generic ${e.valueFrom.secretKeyRef.name}`), 'the kustomization says how to create the Secret');
      assert.ok(createHint.includes(`--from-literal=${e.valueFrom.secretKeyRef.key}=`), `the Secret's key ${e.valueFrom.secretKeyRef.key} is documented`);
    }
    sentinelUrl(envOf(container, 'TIDINGS_REDIS_URL').value);
    assert.match(envOf(container, 'TIDINGS_PUBLIC_URL').value, new RegExp(`^http://\\$\\(POD_IP\\):${LISTEN_PORT}$`));
    assert.ok(envOf(container, 'POD_IP').valueFrom.fieldRef.fieldPath === 'status.podIP');

    // Shutdown: the kubelet waits longer than the preStop pause and the drain.
    const preStop = container.lifecycle.preStop.exec.command;
    const pause = preStop[0] === 'sleep' ? Number(preStop[1]) : 0;
    assert.ok(podSpec.terminationGracePeriodSeconds > pause + DRAIN_SECS, `terminationGracePeriodSeconds ${podSpec.terminationGracePeriodSeconds} ≤ preStop ${pause} + drain_secs ${DRAIN_SECS}`);
    assert.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0);

    // Security: non-root, read-only root filesystem, no privilege escalation.
    assert.equal(podSpec.securityContext.runAsNonRoot, true);
    assert.notEqual(podSpec.securityContext.runAsUser, 0);
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    const dockerUser = dockerfile.filter((o) => o.op === 'USER').at(-1).args.split(':')[0];
    assert.equal(String(podSpec.securityContext.runAsUser), dockerUser, "runAsUser ≠ the image's USER");
    assert.ok(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory);

    // HPA: scales this Deployment on the metric the adapter rule serves.
    const hpa = ofKind('HorizontalPodAutoscaler');
    assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
    assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
    const metric = hpa.spec.metrics.find((m) => m.type === 'Pods').pods.metric.name;
    const adapter = parseYaml(read(DEPLOY, 'k8s', 'prometheus-adapter-rules.yaml'));
    const rule = adapter.rules.custom.find((r) => r.name.as === metric);
    assert.ok(rule, `no prometheus-adapter rule serves ${metric}`);
    assert.ok(hpa.spec.minReplicas >= 2, 'at least two pods, so one can drain into the others');

    // Ingress: routes to the Service's port.
    const ingress = ofKind('Ingress');
    for (const rule of ingress.spec.rules) {
      for (const p of rule.http.paths) {
        assert.equal(p.backend.service.name, service.metadata.name);
        assert.ok(service.spec.ports.some((sp) => sp.name === p.backend.service.port.name), `Ingress port ${p.backend.service.port.name}`);
      }
    }
  });

  test('Grafana dashboard: valid JSON, every panel queries metrics the server exports', () => {
    const dash = JSON.parse(read(DEPLOY, 'grafana-dashboard.json'));
    assert.ok(dash.title && dash.uid && Array.isArray(dash.panels) && dash.panels.length >= 8, 'a dashboard with panels');
    const source = repoFiles
      .filter((f) => f.startsWith('src/') && f.endsWith('.rs'))
      .map((f) => read(REPO_ROOT, f))
      .join('\n');
    const ids = new Set();
    for (const panel of dash.panels) {
      assert.ok(!ids.has(panel.id), `panel id ${panel.id} is unique`);
      ids.add(panel.id);
      assert.ok(panel.targets?.length, `${panel.title}: has queries`);
      for (const target of panel.targets) {
        const names = [...target.expr.matchAll(/\b(tidings_[a-z_]+)/g)].map((m) => m[1].replace(/_bucket$/, ''));
        assert.ok(names.length, `${panel.title}: ${target.expr} names a metric`);
        for (const name of names) assert.ok(source.includes(`"${name}"`), `${panel.title}: ${name} is not a metric of the server`);
      }
    }
  });

  test('local-cluster.sh renders every compose name to loopback and nginx -t accepts the result', () => {
    const state = path.join(tmp, 'render');
    execFileSync(path.join(DEPLOY, 'local-cluster.sh'), ['render', '--state', state], { encoding: 'utf8' });
    const rendered = read(state, 'nginx', 'tidings.conf');
    const upstream = Object.values(nginxUpstreams(rendered)).flat();
    assert.equal(upstream.length, 3);
    assert.ok(upstream.every((s) => s.host === '127.0.0.1'), `rendered upstreams: ${JSON.stringify(upstream)}`);
    assert.ok(sentinelUrl(readToml(read(state, 'config', 'tidings.toml')).redis.url).hosts.every((h) => h.host === '127.0.0.1'));
    // The rendering changes names only: the rest of each file is the same.
    const stripNames = (t) => t.replace(/127\.0\.0\.1[: ]\d+|[\w-]+[: ](3000|26379|6379)\b|listen \d+|\/\S+\/nginx\//g, '');
    for (const f of ['config/tidings.toml', 'config/sentinel.conf', 'config/redis.conf', 'nginx/tidings-locations.conf']) {
      assert.equal(stripNames(read(state, f)), stripNames(read(DEPLOY, f)), `${f}: rendering changed more than the addresses`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------- the server

/** Start the server with `env`; resolves {proc, exited, output(), stop()}. */
function startBinary(args, env) {
  const proc = spawn(TIDINGS_BIN, args, { env: { ...process.env, TIDINGS_LOG: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (c) => (output += c));
  proc.stderr.on('data', (c) => (output += c));
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    proc,
    exited,
    output: () => output,
    async stop() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Wait until the node answers /healthz 200 on `port`; fails with its output when it does not. */
async function healthy(node, port) {
  try {
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200, { timeoutMs: 10_000, what: '/healthz' });
  } catch (err) {
    throw new Error(`${err.message}\n--- server output ---\n${node.output()}`);
  }
}

describe('deploy: the server accepts what the files say', () => {
  test('tidings.toml is accepted (an unknown key is not), the probes and the admin port answer', { timeout: 30_000 }, async () => {
    const [main, admin] = [await freePort(), await freePort()];
    const env = {
      TIDINGS_CONFIG: path.join(DEPLOY, 'config', 'tidings.toml'),
      TIDINGS_LISTEN: `127.0.0.1:${main}`,
      TIDINGS__ADMIN__LISTEN: `127.0.0.1:${admin}`,
      TIDINGS_JWT_SECRET: SECRET,
      TIDINGS_API_KEY: API_KEY,
      TIDINGS_LOG_FORMAT: 'json',
    };
    const node = startBinary(['serve'], env);
    try {
      // Its Sentinels (compose names) do not resolve here: the node runs, alive but not ready.
      await healthy(node, main);
      const ready = await fetch(`http://127.0.0.1:${main}/readyz`);
      const body = await ready.json();
      assert.ok([200, 503].includes(ready.status) && 'ready' in body, `/readyz answered ${ready.status} ${JSON.stringify(body)}`);
      assert.equal((await fetch(`http://127.0.0.1:${admin}/metrics`)).status, 200, '/metrics on the admin port');
      assert.equal((await fetch(`http://127.0.0.1:${main}/metrics`)).status, 404, '/metrics stays off the main port');
    } finally {
      await node.stop();
    }

    // The same file with one unknown key must be refused: the check above can fail.
    const bad = path.join(tmp, 'bad.toml');
    writeFileSync(bad, read(DEPLOY, 'config', 'tidings.toml').replace('[shutdown]\n', '[shutdown]\nno_such_option = 1\n'));
    const refused = startBinary(['serve'], { ...env, TIDINGS_CONFIG: bad });
    const timer = setTimeout(() => refused.proc.kill('SIGKILL'), 10_000);
    const { code } = await refused.exited;
    clearTimeout(timer);
    assert.notEqual(code, 0, 'a config with an unknown key was accepted');
    assert.match(refused.output(), /no_such_option/);
  });

  test("the HPA metric's source series is in /metrics once a client is connected", { timeout: 30_000 }, async () => {
    const rule = parseYaml(read(DEPLOY, 'k8s', 'prometheus-adapter-rules.yaml')).rules.custom[0];
    const series = /^(\w+)/.exec(rule.seriesQuery)[1];
    const [main, admin] = [await freePort(), await freePort()];
    const node = startBinary(['serve'], {
      TIDINGS_LISTEN: `127.0.0.1:${main}`,
      TIDINGS__ADMIN__LISTEN: `127.0.0.1:${admin}`,
      TIDINGS_JWT_SECRET: SECRET,
      TIDINGS_API_KEY: API_KEY,
    });
    let socket;
    try {
      await healthy(node, main);
      socket = io(`http://127.0.0.1:${main}`, { forceNew: true, reconnection: false, auth: { token: token({ sub: 'hpa' }) } });
      await eventually(() => socket.connected, { timeoutMs: 10_000, what: 'a client to connect' });
      await sleep(100);
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const samples = [...text.matchAll(new RegExp(`^${series}(\\{[^}]*\\})? (\\S+)$`, 'gm'))];
      assert.ok(samples.length, `${series} is not in /metrics`);
      // What the adapter rule sums per pod: one connected client.
      assert.equal(samples.reduce((sum, m) => sum + Number(m[2]), 0), 1, `${series} with one client connected: ${samples.map((m) => m[0])}`);
    } finally {
      socket?.close();
      await node.stop();
    }
  });
});
