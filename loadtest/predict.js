// k6 scenarios for the predictor's REST API, with thresholds.
//
//   BASE_URL=http://127.0.0.1:8080 k6 run loadtest/predict.js
//
// `single`: POST /v1/predict at a constant arrival rate (RATE, default 1000/s).
// `batch`:  POST /v1/predict/batch with 32 items (BATCH_RATE, default 100/s).
// Thresholds: under 1% failed requests; p99 under 10 ms (single) and 50 ms
// (batch). k6 costs far more CPU per request than the server, so peak rates
// are measured with wrk (loadtest/run.sh does both).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const TOKEN = __ENV.TOKEN || '';
const DURATION = __ENV.DURATION || '20s';
const headers = { 'Content-Type': 'application/json' };
if (TOKEN) headers['Authorization'] = `Bearer ${TOKEN}`;

export const options = {
  discardResponseBodies: false,
  scenarios: {
    single: {
      executor: 'constant-arrival-rate',
      exec: 'single',
      rate: Number(__ENV.RATE || 1000),
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
    batch: {
      executor: 'constant-arrival-rate',
      exec: 'batch',
      rate: Number(__ENV.BATCH_RATE || 100),
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 10,
      maxVUs: 50,
    },
  },
  thresholds: {
    'http_req_failed': ['rate<0.01'],
    'http_req_duration{scenario:single}': ['p(99)<10'],
    'http_req_duration{scenario:batch}': ['p(99)<50'],
    'checks': ['rate>0.99'],
  },
};

function row() {
  const f = [];
  for (let i = 0; i < 8; i++) f.push(Math.random() * 4 - 2);
  return f;
}

export function single() {
  const res = http.post(`${BASE}/v1/predict`, JSON.stringify({ game_id: 'k6', features: row() }), { headers });
  check(res, {
    'status 200': (r) => r.status === 200,
    'probability': (r) => {
      const p = r.json('home_win_prob');
      return p >= 0 && p <= 1;
    },
  });
}

export function batch() {
  const items = [];
  for (let i = 0; i < 32; i++) items.push({ game_id: `k6-${i}`, features: row() });
  const res = http.post(`${BASE}/v1/predict/batch`, JSON.stringify({ items }), { headers });
  check(res, {
    'status 200': (r) => r.status === 200,
    '32 results': (r) => r.json('results').length === 32,
  });
}
