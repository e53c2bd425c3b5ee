// k6: the champion's REST latency at a constant arrival rate, for
// loadtest/shadow.sh (run once without an experiment, once with a shadow
// scoring every request).
//
//   BASE_URL=http://127.0.0.1:18080 RATE=800 DURATION=20s k6 run loadtest/shadow.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const headers = { 'Content-Type': 'application/json' };

export const options = {
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    single: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 800),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: { http_req_failed: ['rate<0.01'] },
};

let n = 0;
export default function () {
  const features = [];
  for (let i = 0; i < 8; i++) features.push(Math.random() * 4 - 2);
  n++;
  const res = http.post(`${BASE}/v1/predict`, JSON.stringify({ game_id: `g${__VU}-${n}`, features }), { headers });
  check(res, { 'status 200': (r) => r.status === 200 });
}
