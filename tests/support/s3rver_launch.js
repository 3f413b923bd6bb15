// Starts s3rver (an S3-compatible server, from npm; scripts/setup installs it) for the media
// tests: on 127.0.0.1, a free port (or argv[3]; 0 for a free one), data under argv[2], with the
// bucket "parley", silent; over HTTPS when argv[4] and argv[5] name a PEM key and certificate.
// Prints "s3rver listening on HOST:PORT" once it accepts connections (what
// test_support::spawn_listening reads). Stopped with SIGTERM.
'use strict';
const fs = require('fs');
const S3rver = require('s3rver');

const directory = process.argv[2];
if (!directory) {
  console.error('usage: node s3rver_launch.js DATA_DIR [PORT [KEY CERT]]');
  process.exit(2);
}
new S3rver({
  address: '127.0.0.1',
  port: Number(process.argv[3] || 0),
  silent: true,
  directory,
  configureBuckets: [{ name: 'parley' }],
  key: process.argv[4] ? fs.readFileSync(process.argv[4]) : undefined,
  cert: process.argv[5] ? fs.readFileSync(process.argv[5]) : undefined,
})
  .run()
  .then((a) => console.log(`s3rver listening on ${a.address}:${a.port}`))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
process.on('SIGTERM', () => process.exit(0));
