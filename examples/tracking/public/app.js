// The manager page: log in as a manager of a team, watch its workers move on the map, and see who of them is
// online. Events: `position` (the team's position room, conflated by the node to one per worker and second),
// presence:join / presence:leave / presence:reset (the team's crew room), and the `presence` event to read who
// is in the crew room on every connect.
//
// For tests: <body data-connection="logged-out | connecting | connected | reconnecting | refused" data-team
// data-token-exp data-refreshes>; see map.js and crew.js for the markers and the list.

import { openSocket } from './connection.js';
import { Crew } from './crew.js';
import { CityMap } from './map.js';
import { Session, knownTeams } from './session.js';

const TEAM = /^[a-z0-9][a-z0-9-]{0,23}$/;
const LOGIN_KEY = 'tracking.login';
const $ = (id) => document.getElementById(id);

async function start(team) {
  const saved = JSON.parse(sessionStorage.getItem(LOGIN_KEY) ?? 'null');
  let session;
  try {
    session = await Session.start(team, saved?.team === team ? saved.manager : undefined);
  } catch (err) {
    return showLogin(err.message);
  }
  sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ team, manager: session.manager }));
  showTracking(session);

  const select = (worker) => {
    const next = crew.selected === worker ? null : worker;
    crew.select(next);
    map.select(next);
  };
  const map = new CityMap($('map'), select);
  const crew = new Crew(team, map, select);
  let refreshes = 0;
  document.body.dataset.tokenExp = String(session.exp);
  const socket = openSocket(
    session,
    (state, detail) => {
      showConnection(state, detail);
      // On every connection: positions need nothing (the next ones come within a second), but who came and
      // went while this page was away is only in the presence list.
      if (state === 'connected') crew.load(socket);
    },
    (exp) => {
      document.body.dataset.tokenExp = String(exp);
      document.body.dataset.refreshes = String(++refreshes);
    },
  );
  socket.on('position', (p) => crew.position(p));
  socket.on('presence:join', ({ room, user } = {}) => {
    if (room === crew.room) crew.presence(user, 'online');
  });
  socket.on('presence:leave', ({ room, user } = {}) => {
    if (room === crew.room) crew.presence(user, 'offline');
  });
  // Many came and went at once: the node says so instead of naming them; read the list again.
  socket.on('presence:reset', ({ room } = {}) => {
    if (room === crew.room) crew.load(socket);
  });
}

// ---------------------------------------------------------------------------
// what the page shows around the map and the list

async function showLogin(error = '') {
  document.body.dataset.connection = 'logged-out';
  $('login-view').hidden = false;
  $('tracking-view').hidden = true;
  $('me').hidden = true;
  $('login-error').textContent = error;
  $('login-team').focus();
  const teams = await knownTeams();
  $('team-list').replaceChildren(
    ...teams.map((team) => {
      const option = document.createElement('option');
      option.value = team;
      return option;
    }),
  );
  $('quick-teams').replaceChildren(
    ...teams.map((team) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.team = team;
      button.textContent = team;
      button.addEventListener('click', () => start(team));
      return button;
    }),
  );
  $('quick-teams-label').hidden = teams.length === 0;
}

function showTracking(session) {
  document.body.dataset.team = session.team;
  document.title = `${session.team} · tidings tracking`;
  $('login-view').hidden = true;
  $('tracking-view').hidden = false;
  $('me').hidden = false;
  $('team-name').textContent = session.team;
  $('me-name').textContent = session.user;
}

/** The connection state: banner text and the body's data-connection. */
function showConnection(state, detail) {
  document.body.dataset.connection = state;
  const banner = $('connection-banner');
  const text = {
    connecting: 'connecting…',
    reconnecting: 'reconnecting… (positions and the online list resume when the connection is back)',
    refused: `the server refused this login (${detail}); log in again`,
  }[state];
  banner.hidden = !text;
  banner.textContent = text ?? '';
}

function wire() {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const team = $('login-team').value.trim().toLowerCase();
    if (!TEAM.test(team)) return showLogin('a team name is 1-24 lowercase letters, digits or "-"');
    start(team);
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(LOGIN_KEY);
    location.reload();
  });
}

wire();
const returning = JSON.parse(sessionStorage.getItem(LOGIN_KEY) ?? 'null');
if (returning?.team) start(returning.team);
else showLogin();
