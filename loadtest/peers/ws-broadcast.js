// The peer `loadtest/ws.sh compare` measures our fanout against: a plain
// Node.js broadcast server on the `ws` library (Debian's node-ws; npm is not
// reachable here), as people write one: serialise each prediction once and
// `ws.send` the same string to every subscriber.
//
// It speaks the part of the fanout's protocol that `wsload clients` uses
// (`subscribe` to channels, `subscribed` and `prediction` frames of the same
// shape, so the same client measures both), and takes predictions from
// `wsload publish --peer ws://HOST:PORT/publish` (a JSON array per burst)
// instead of Kafka: no Kafka hop, no history, no recovery, no per-client
// queue limit. Usage:
//
//   NODE_PATH=/usr/share/nodejs node loadtest/peers/ws-broadcast.js 127.0.0.1:18091
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:18091').split(':');
const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/ready' ? 200 : 404).end();
});
const clients = new WebSocketServer({ noServer: true, maxPayload: 4096 });
const publishers = new WebSocketServer({ noServer: true, maxPayload: 64 << 20 });
server.on('upgrade', (req, socket, head) => {
  const wss = req.url === '/v1/stream' ? clients : req.url === '/publish' ? publishers : null;
  if (!wss) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

// channel -> subscribers
const channels = new Map();
let offset = 0;

clients.on('connection', (ws) => {
  const mine = new Set();
  ws.on('message', (raw) => {
    let op;
    try {
      op = JSON.parse(raw);
    } catch {
      return ws.send('{"type":"error","code":"malformed","message":"not JSON"}');
    }
    if (op.op === 'subscribe' && Array.isArray(op.channels)) {
      for (const name of new Set(op.channels)) {
        if (!channels.has(name)) channels.set(name, new Set());
        channels.get(name).add(ws);
        mine.add(name);
        ws.send(JSON.stringify({ type: 'subscribed', channel: name, recovered: false, positions: {} }));
      }
    } else if (op.op === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', id: op.id ?? null }));
    }
  });
  ws.on('close', () => {
    for (const name of mine) channels.get(name)?.delete(ws);
  });
  ws.on('error', () => {});
});

function broadcast(name, prediction) {
  const subs = channels.get(name);
  if (!subs || subs.size === 0) return;
  const frame = `{"type":"prediction","channel":${JSON.stringify(name)},"position":{"partition":0,"offset":${offset}},"data":${prediction}}`;
  // A string, as most servers send: encoding it to a Buffer once and sending
  // that measured slower here (benches/results/ws-compare-2026-12-03-*.txt).
  for (const ws of subs) ws.send(frame);
}

publishers.on('connection', (ws) => {
  ws.on('message', (raw) => {
    for (const p of JSON.parse(raw)) {
      const data = JSON.stringify(p);
      broadcast('all', data);
      broadcast(`sport:${p.sport}`, data);
      broadcast(`game:${p.game_id}`, data);
      offset += 1;
    }
  });
});

server.listen(Number(port), host);
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
