// Moves media ciphertext to and from a blob store through the presigned URLs parleyd hands out
// (media/local/blob_http_server; the protocol is in docs/protocol.md, "Media"): resumable
// uploads (HEAD for the offset stored, then PUT with Content-Range) and resumable downloads
// (GET with Range). Files are streamed in pieces of 256 KiB, never held whole in memory.
//
// http:// and https:// URLs. Over https:// the store's certificate is checked as parley checks
// a wss:// server's (common/tls_client: TLS 1.2 or later, the host name, against the PEM
// certificates of `ca_file` only or, when it is empty, the system's trusted certificates).
// Against S3 the HEAD gets no Parley-Upload-Offset, and a single-PUT upload starts over from
// byte 0; a larger file goes in parts (the multipart calls below), which the caller resumes.
//
// Synchronous: each call runs a private io_context on the calling thread and returns when the
// transfer is over. Timeouts: 10 s to resolve and connect, 30 s for every read and write to
// make progress. Calls are independent of each other and may run concurrently on different
// threads (not on the same file). Errors are values (transfer_error); nothing here throws but
// std::bad_alloc (and transfer_result::value() on an error).
#pragma once

#include <boost/system/result.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace parley::client {

struct transfer_error {
  enum class errc {
    bad_url = 1,   // not http(s)://HOST[:PORT]/PATH
    connect,       // the host could not be resolved or connected to within 10 s, or (https)
                   // the TLS handshake failed: the certificate did not verify, for instance
    timeout,       // a read or a write made no progress for 30 s
    connection,    // the connection broke or closed in the middle of the transfer
    http_status,   // the server answered with an error status: see status and message
    protocol,      // the server answered something a blob store does not (bad headers)
    verification,  // the bytes do not add up: more (or fewer) than expected, a wrong range
    io,            // the local file could not be read or written
  };
  errc code = errc::io;
  unsigned status = 0;  // http_status: the HTTP status code
  // http_status: the server's text (its first 1 KiB, trailing newline cut), e.g. "expired",
  // "bad signature", "hash mismatch"; otherwise what failed, for a person to read.
  std::string message;
};

// One line for a person, e.g. "the blob store answered 403: expired".
std::string describe(const transfer_error& e);

}  // namespace parley::client

namespace boost::system {
// Lets transfer_result<T>::value() throw (std::runtime_error with describe()).
[[noreturn]] void throw_exception_from_error(const parley::client::transfer_error& e,
                                             const boost::source_location& loc);
}  // namespace boost::system

namespace parley::client {

template <class T>
using transfer_result = boost::system::result<T, transfer_error>;

// Progress of one transfer: bytes of the file done (including what an earlier, interrupted
// transfer had done), of `total`. Called on the calling thread at most ~10 times a second,
// and once more at the end of a transfer that succeeds, with done == total.
using progress_fn = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Uploads `ciphertext_file` to the upload URL `url`. First asks the store (HEAD) how much of
// it is already stored: all of it -> done at once; part of it -> sends the rest with
// Content-Range; nothing (or an answer other than 200) -> sends the whole file. The PUT asks
// for 100-continue, so that a refusal (expired, wrong size...) arrives before the body is sent.
// Success means the store answered 201: it checked the size and the SHA-256 it signed.
[[nodiscard]] transfer_result<void> upload(const std::string& url,
                                           const std::filesystem::path& ciphertext_file,
                                           const progress_fn& progress = {},
                                           const std::string& ca_file = {});

// S3 multipart uploads (docs/protocol.md, "Media"), for a slot with a multipart_url:
//  - start_multipart POSTs to that URL and answers the UploadId the store gives;
//  - upload_part PUTs bytes [first, last) of the file to one part's URL (Content-Length
//    last - first, 100-continue) and answers the ETag the store gives it (quotes kept);
//  - complete_multipart POSTs the CompleteMultipartUpload XML of parts 1..N with `etags[N-1]`
//    and succeeds only on a CompleteMultipartUploadResult (S3 can answer 200 with an <Error>).
[[nodiscard]] transfer_result<std::string> start_multipart(const std::string& url,
                                                           const std::string& ca_file = {});
[[nodiscard]] transfer_result<std::string> upload_part(const std::string& url,
                                                       const std::filesystem::path& ciphertext_file,
                                                       std::uint64_t first, std::uint64_t last,
                                                       const progress_fn& progress = {},
                                                       const std::string& ca_file = {});
[[nodiscard]] transfer_result<void> complete_multipart(const std::string& url,
                                                       const std::vector<std::string>& etags,
                                                       const std::string& ca_file = {});

// Downloads the blob at the download URL `url` into `partial_file`, which must end up holding
// exactly `expected_size` bytes. If the file already holds K bytes, 0 < K < expected_size,
// asks for the rest only (Range: bytes=K-) and appends; a server answering 200 instead of 206
// sends everything and the file starts over. A file holding expected_size bytes is left as it
// is (success without a request); one holding more starts over. Stops with `verification` as
// soon as the server sends more than expected. The caller checks the content (SHA-256) after.
// What arrived before an error stays in the file, for the next call to continue from.
[[nodiscard]] transfer_result<void> download(const std::string& url,
                                             const std::filesystem::path& partial_file,
                                             std::uint64_t expected_size,
                                             const progress_fn& progress = {},
                                             const std::string& ca_file = {});

}  // namespace parley::client
