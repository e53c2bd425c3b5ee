// k6 for loadtest/shadow.sh: two predictors loaded at once, at the same
// constant arrival rate: `off` (no experiment) and `shadow` (a shadow
// experiment scoring every request). Both see the same machine at the same
// moments, so what differs between their latencies is the shadow.
//
//   OFF_URL=http://127.0.0.1:18090 SHADOW_URL=http://127.0.0.1:18091 RATE=400 DURATION=20s \
//     k6 run loadtest/shadow.js
import http from 'k6/http';
import { check } from 'k6';

const rate = Number(__ENV.RATE || 400);
const duration = __ENV.DURATION || '20s';
const scenario = (url) => ({
  executor: 'constant-arrival-rate',
  rate,
  timeUnit: '1s',
  duration,
  preAllocatedVUs: 40,
  maxVUs: 200,
  env: { URL: url },
});

export const options = {
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    off: scenario(__ENV.OFF_URL || 'http://127.0.0.1:18090'),
    shadow: scenario(__ENV.SHADOW_URL || 'http://127.0.0.1:18091'),
  },
  // Thresholds on the scenarios' sub-metrics put them in the summary.
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{scenario:off}': ['max>=0'],
    'http_req_duration{scenario:shadow}': ['max>=0'],
  },
};

const headers = { 'Content-Type': 'application/json' };
let n = 0;
export default function () {
  const features = [];
  for (let i = 0; i < 8; i++) features.push(Math.random() * 4 - 2);
  n++;
  const res = http.post(`${__ENV.URL}/v1/predict`, JSON.stringify({ game_id: `g${__VU}-${n}`, features }), { headers });
  check(res, { 'status 200': (r) => r.status === 200 });
}
