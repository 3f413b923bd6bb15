// The HTTP/1.1 server of the local blob store: clients PUT and GET media ciphertext through
// the presigned URLs of local_blob_store (blob_url_signer describes them). It runs on its own
// io_context and ONE thread, named "blob-io", so that transfers and their disk I/O (write(2),
// pread(2), fsync(2) run on that thread) never stall parleyd's message threads.
//
// Over TLS when set_tls() gave it a certificate (the HTTP is the same, inside TLS 1.2+): the
// handshake must end within `io_timeout`.
//
// Requests (every error answer is a short text/plain body; see docs/protocol.md, "Media"):
//   PUT  /v1/blobs/<id>?op=put&...  stores the body at the offset Content-Range gives (0
//        without one); the body is streamed to <id>.part in pieces of at most 256 KiB while
//        its SHA-256 is computed. When the file reaches the signed size and hash: fsync,
//        rename to <id>, fsync the directory, 201. Before that: 204 with Parley-Upload-Offset.
//   HEAD /v1/blobs/<id>?op=put&...  200 with Parley-Upload-Offset: the bytes stored so far.
//   GET  /v1/blobs/<id>?op=get&...  the complete blob, or the byte range Range asks for.
// Status codes: 400 (malformed URL, Content-Range or request; hash mismatch), 403 (expired,
// bad signature, wrong operation), 404, 405, 409 (offset mismatch, blob already complete,
// another upload of the blob took over), 411 (no Content-Length, or chunked), 413 (past the
// signed size), 416, 431 (headers over 8 KiB), 500 (the disk failed), 503 (connection limit).
//
// Bounds: at most `max_connections` connections at once, and at most `max_per_source` of them
// from one source address (common/source_limit: an IPv4 address or an IPv6 /64, those in
// `unlimited_sources` not counted); one more is accepted, answered 503 and closed at once; 8 KiB of
// request headers; every read and write must make progress within `io_timeout` (between requests
// too). Memory per connection: a 64 KiB read buffer, plus a 256 KiB piece buffer while a body is
// moving. One upload per blob at a time: a new PUT of a blob takes the .part over from an older one
// still running (most likely a dead connection the client gave up on), which then stops at its next
// read and closes its connection.
//
// Thread safety: start(), stop() and local_endpoint() may be called from any thread but the
// blob-io thread (stop() joins it). Not restartable: one start() per object. `store` must
// outlive the server.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstddef>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/source_limit.hpp"
#include "media/local/local_blob_store.hpp"

namespace parley::media {

class blob_http_server {
 public:
  struct options {
    std::size_t max_connections = 256;
    std::size_t max_per_source = 0;  // 0: no limit per source
    std::vector<address_block> unlimited_sources{};
    std::chrono::seconds io_timeout{30};
    // How long stop() lets connections close before it stops the thread's event loop.
    std::chrono::milliseconds stop_deadline{2000};
  };

  explicit blob_http_server(local_blob_store& store);
  blob_http_server(local_blob_store& store, options opts);
  // The defaults, with at most `max_connections` connections.
  blob_http_server(local_blob_store& store, std::size_t max_connections);
  ~blob_http_server();  // stop()
  blob_http_server(const blob_http_server&) = delete;
  blob_http_server& operator=(const blob_http_server&) = delete;

  // Binds `endpoint` (port 0: any free port) and starts serving on the blob-io thread. Returns
  // the address bound (as local_endpoint() does after). Throws boost::system::system_error if
  // it cannot bind, std::logic_error if called twice.
  boost::asio::ip::tcp::endpoint start(const boost::asio::ip::tcp::endpoint& endpoint);

  // From now on, new connections speak TLS with `context` (a server context with the
  // certificate and key loaded), or plain HTTP again with nullptr. Connections already open
  // keep what they started with: a renewed certificate is this call with a new context.
  // Thread-safe.
  void set_tls(std::shared_ptr<boost::asio::ssl::context> context);

  // Where the server listens; unspecified before start().
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  // Stops accepting, closes every connection (uploads cut in the middle keep their .part),
  // and joins the thread: within `stop_deadline` if the connections let go, else the event
  // loop is stopped there and then. Idempotent; a no-op before start().
  void stop();

  // The server's state, shared with its coroutines; defined in the .cpp.
  struct state;

 private:
  local_blob_store& store_;
  options options_;
  mutable std::mutex control_;  // start/stop/local_endpoint against each other
  boost::asio::ip::tcp::endpoint endpoint_;
  bool started_ = false;
  // Declared in this order so that the coroutines' state goes before the io_context that may
  // still hold coroutine frames (after a forced stop) and after the thread is joined.
  std::unique_ptr<boost::asio::io_context> io_;
  std::shared_ptr<state> state_;
  std::future<void> finished_;  // ready when the thread's run() returned
  std::thread thread_;
};

}  // namespace parley::media
