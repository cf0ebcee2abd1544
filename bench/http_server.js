// The rolling row's server for PM2 (bench/pm2roll.py): the Node counterpart of
// tests/programs/listener.py --graceful. Every GET is answered with a small JSON object (its
// pid and instance); it prints 'serving <pid>' once it listens; on SIGINT (what PM2 sends to
// stop a process), SIGTERM or PM2's 'shutdown' message it stops accepting, answers what it
// has in hand and exits.
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  const body = JSON.stringify({pid: process.pid, instance: process.env.NODE_APP_INSTANCE});
  res.writeHead(200, {'Content-Type': 'application/json',
                      'Content-Length': Buffer.byteLength(body)});
  res.end(body);
});
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`serving ${process.pid}`);
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
process.on('message', (message) => { if (message === 'shutdown') stop(); });
