// Formatting shared by the back office and the point-of-sale pages.

const MONEY = new Intl.NumberFormat('en-IE', { style: 'currency', currency: 'EUR' });
const CLOCK = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A price in cents as money: 950 → "€9.50". */
export const money = (cents) => MONEY.format(cents / 100);

/** A time of day (milliseconds since the epoch) as "14:03:05". */
export const clock = (ms) => CLOCK.format(new Date(ms));

/** What an update changed, in words: "sold out", "back in stock", "€9.50 → €9.90", or both. */
export function describeChange(previous, next) {
  const parts = [];
  if (previous.available !== next.available) parts.push(next.available ? 'back in stock' : 'sold out');
  if (previous.price !== next.price) parts.push(`${money(previous.price)} → ${money(next.price)}`);
  return parts.join(', ') || 'unchanged';
}

/** Create an element with a class and text. */
export function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
