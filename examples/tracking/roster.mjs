// Who the tracking simulator simulates, and its options: team names, and for each worker its id, team, display
// name, speed and route seed, all fixed by a seed. No socket.io-client here, so the demo server can read the
// options and the team names before it has installed the client.

import { seeded } from './walker.mjs';

const TEAMS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet',
  'kilo', 'lima', 'mike', 'november', 'oscar', 'papa', 'quebec', 'romeo', 'sierra', 'tango', 'uniform',
  'victor', 'whiskey', 'xray', 'yankee', 'zulu'];
const NAMES = ['Ada', 'Bo', 'Cleo', 'Dev', 'Eli', 'Fay', 'Gus', 'Hana', 'Ivo', 'Jo', 'Kai', 'Lena', 'Max',
  'Nia', 'Omar', 'Pia', 'Quinn', 'Rui', 'Sol', 'Tess', 'Uma', 'Vik', 'Wren', 'Yara', 'Zeb'];

/** Speeds in metres a second (delivery vans in town). */
const MIN_SPEED = 8;
const MAX_SPEED = 15;

/** The names of `count` teams: alpha, bravo, … zulu, then team-27, team-28, … */
export function teamNames(count) {
  return Array.from({ length: count }, (_, i) => TEAMS[i] ?? `team-${i + 1}`);
}

/** Who is simulated: worker k is in team k mod M; ids are `<team>-<nn>`, names and speeds come from the seed. */
export function roster({ workers, teams, seed }) {
  const random = seeded(seed);
  const names = teamNames(teams);
  const perTeam = new Array(teams).fill(0);
  // Names in a seeded order, each used once before any is used again (then with a number).
  const order = NAMES.map((name) => [random(), name]).sort((a, b) => a[0] - b[0]).map(([, name]) => name);
  return Array.from({ length: workers }, (_, k) => {
    const t = k % teams;
    perTeam[t] += 1;
    const round = Math.floor(k / order.length);
    const name = `${order[k % order.length]}${round > 0 ? ` ${round + 1}` : ''}`;
    return {
      worker: `${names[t]}-${String(perTeam[t]).padStart(2, '0')}`,
      team: names[t],
      name,
      speed: MIN_SPEED + random() * (MAX_SPEED - MIN_SPEED),
      seed: Math.floor(random() * 2 ** 32),
    };
  });
}

/** Parse and check the simulation options shared with serve.mjs --simulate. */
export function simulationOptions(values) {
  const int = (name, min, max) => {
    const v = Number(values[name]);
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
    return v;
  };
  const rate = Number(values.rate);
  if (!(rate > 0 && rate <= 20)) throw new Error('--rate must be above 0 and at most 20');
  const workers = int('workers', 1, 5000);
  return {
    workers,
    teams: int('teams', 1, workers),
    rate,
    seed: int('seed', 0, 2 ** 32 - 1),
    churn: int('churn', 0, 3600),
    tokenTtl: int('token-ttl', 120, 86400),
  };
}

/** The simulation options' parseArgs definitions with their defaults. */
export const SIMULATION_ARGS = {
  workers: { type: 'string', default: '24' },
  teams: { type: 'string', default: '4' },
  rate: { type: 'string', default: '2' },
  seed: { type: 'string', default: '1' },
  churn: { type: 'string', default: '0' },
  'token-ttl': { type: 'string', default: '900' },
};
