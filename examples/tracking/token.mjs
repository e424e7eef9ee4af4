// Development tokens of the tracking example: the claims each role gets (signed by ../shared/token.mjs). A
// manager may join its own team's two rooms and publish nothing; a worker publishes its positions into its
// team's position room without being a member of it, and is a member of its team's crew room so that the
// managers see it online.

import { mintToken } from '../shared/token.mjs';

export { mintToken };

/** Team names: lowercase letters, digits and `-`, 1-24 characters (they become part of room names). */
export const TEAM_NAME = /^[a-z0-9][a-z0-9-]{0,23}$/;

/** The room a team's positions go to (ephemeral, conflated per worker: see tidings.toml). */
export const positionRoom = (team) => `pos:${team}`;
/** The room whose presence is the team's online workers (presence:join / presence:leave). */
export const crewRoom = (team) => `crew:${team}`;
/** Every manager's user id starts with this, so pages can tell managers from workers in the crew room. */
export const MANAGER_PREFIX = 'manager:';

/** Claims of a manager of `team` (`id` tells managers of one team apart). */
export function managerClaims(team, id) {
  const rooms = [positionRoom(team), crewRoom(team)];
  return { sub: `${MANAGER_PREFIX}${team}:${id}`, rooms, join: rooms, publish: [] };
}

/** Claims of worker `worker` of `team`. */
export function workerClaims(worker, team) {
  return { sub: worker, rooms: [], join: [crewRoom(team)], publish: [positionRoom(team)] };
}
