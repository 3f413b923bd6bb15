// Starts s3rver (an S3-compatible server, from npm; scripts/setup installs it) for the media
// tests: on 127.0.0.1, a free port (or argv[3]; 0 for a free one), data under argv[2], with the
// bucket "parley", silent; over HTTPS when argv[4] and argv[5] name a PEM key and certificate.
// Prints "s3rver listening on HOST:PORT" once it accepts connections (what
// test_support::spawn_listening reads). Stopped with SIGTERM.
// s3rver 3.7.1 has no AbortMultipartUpload (DELETE /BUCKET/KEY?uploadId=U answers 405): this
// adds it as S3 documents it (204 once the upload and its parts are gone, 404 NoSuchUpload for
// an upload it does not hold), in front of s3rver's own routes; an id s3rver could never have
// made (not hex) is answered 400 InvalidArgument, as a store may answer an id it cannot
// parse (the tests of a refused abort use one). Like s3rver's other V4 checks it does not
// verify the signature.
'use strict';
const fs = require('fs');
const path = require('path');
const S3rver = require('s3rver');

const directory = process.argv[2];
if (!directory) {
  console.error('usage: node s3rver_launch.js DATA_DIR [PORT [KEY CERT]]');
  process.exit(2);
}
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(process.argv[3] || 0),
  silent: true,
  directory,
  configureBuckets: [{ name: 'parley' }],
  key: process.argv[4] ? fs.readFileSync(process.argv[4]) : undefined,
  cert: process.argv[5] ? fs.readFileSync(process.argv[5]) : undefined,
});

async function abortMultipartUpload(ctx, next) {
  const [bucket, ...key] = ctx.path.split('/').filter((p) => p.length > 0);
  if (ctx.method !== 'DELETE' || !('uploadId' in ctx.query) || !bucket || key.length === 0) {
    return next();
  }
  const id = String(ctx.query.uploadId);
  const dir = path.join(server.store.getResourcePath(bucket, undefined, 'uploads'), id);
  if (!/^[0-9a-f]+$/.test(id)) {
    ctx.status = 400;
    ctx.type = 'application/xml';
    ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>' +
      '<Message>Invalid uploadId.</Message></Error>';
    return undefined;
  }
  if (!fs.existsSync(dir)) {
    ctx.status = 404;
    ctx.type = 'application/xml';
    ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code>' +
      '<Message>The specified upload does not exist.</Message></Error>';
    return undefined;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  ctx.status = 204;
  return undefined;
}
// Before the last middleware, s3rver's router.
server.middleware.splice(server.middleware.length - 1, 0, abortMultipartUpload);

server
  .run()
  .then((a) => console.log(`s3rver listening on ${a.address}:${a.port}`))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
process.on('SIGTERM', () => process.exit(0));
