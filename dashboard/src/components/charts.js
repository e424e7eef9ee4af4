// The two time-series charts, events/s and deliveries/s: the cluster's total and one line per node.

import { html } from 'htm/preact';
import { useMemo } from 'preact/hooks';
import { fmtRate } from '../format.js';
import { seriesOf, summaryOf } from '../samples.js';
import { TimeChart } from './time-chart.js';

function RateChart({ samples, metric, title, what }) {
  const series = useMemo(() => seriesOf(samples, metric), [samples, metric]);
  const sum = summaryOf(series);
  return html`
    <figure class="panel chart" data-metric=${metric} data-points=${sum.points} data-max=${sum.max ?? ''}>
      <figcaption>
        <h2>${title}</h2>
        <span class="latest">
          ${sum.latest === null ? 'no samples yet' : html`<strong>${fmtRate(sum.latest)}</strong> ${what}/s now`}
        </span>
      </figcaption>
      <${TimeChart}
        ids=${series.ids}
        data=${series.data}
        label=${`${title}: cluster total and per node over the last 10 minutes; latest ${fmtRate(sum.latest)} per second, highest ${fmtRate(sum.max)}`}
      />
    </figure>
  `;
}

/** Both charts, side by side on wide screens. */
export function Charts({ samples }) {
  return html`
    <section class="charts" aria-label="Rates over time">
      <${RateChart} samples=${samples} metric="events_per_sec" title="Events per second" what="events" />
      <${RateChart} samples=${samples} metric="deliveries_per_sec" title="Deliveries per second" what="deliveries" />
    </section>
  `;
}
