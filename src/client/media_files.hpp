// Files on top of the client: what the CLI (and any app) calls around the messenger's
// seal_media / send_group_media (docs/security.md, "Media"; docs/protocol.md, "Media").
//
//  - upload_file() encrypts a file with a fresh key (media::encrypt_file: AES-256-GCM in
//    64 KiB chunks, into <work_dir>/<random>.enc, never whole in memory), asks the server for
//    an upload slot, and PUTs the ciphertext to the blob store. It returns the Media to send
//    (media id, key, hash, sizes, type, name). The state of an upload in progress is kept in
//    the local store under the source's path, size and modification time: run again after a
//    cut connection, it resumes from what the blob store has (same key, same ciphertext; a new
//    slot if the old URL expired). finish_upload() forgets that state once the message is sent.
//  - download_file() asks for the message's download URL, GETs the ciphertext into
//    <work_dir>/<media id>.part (resuming with an HTTP Range from what is there), then checks
//    and decrypts it into the output file (media::decrypt_file: nothing is written to `out`
//    unless every chunk, the size and the hash verify).
//  - media_problem() checks a received Media (sizes, key and hash lengths, id) before it is
//    recorded; describe_media() is the one line the history shows for it.
//
// The HTTP transfers are blocking (client/blob_transfer); the awaitables run them on a thread
// of their own and poll, so the connection keeps being served meanwhile.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "client/client.hpp"
#include "client/local_store.hpp"
#include "parley/content/v1/content.pb.h"

namespace parley::client {

struct file_to_send {
  std::filesystem::path path;
  std::string mime_type;  // empty: from the file name's extension
  std::string caption;
  bool voice = false;
};

// Bytes done of the total; called from the transfer's thread, at most ~10 times a second.
using transfer_progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

boost::asio::awaitable<result<parley::content::v1::Media>> upload_file(
    client& api, local_store& store, file_to_send file, std::filesystem::path work_dir,
    transfer_progress progress);

// After the message carrying the upload's Media was sent: drops the resume state and the
// encrypted copy.
void finish_upload(local_store& store, const std::filesystem::path& source);

// The file of the message `server_id` (one this device received or sent), into `out`.
boost::asio::awaitable<result<std::uint64_t>> download_file(client& api, local_store& store,
                                                            std::uint64_t server_id,
                                                            std::filesystem::path out,
                                                            std::filesystem::path work_dir,
                                                            transfer_progress progress);

// Why a received Media cannot be a file message, or nullopt if it can.
std::optional<std::string> media_problem(const parley::content::v1::Media& m);
// "[file] report.pdf (1.2 MB): caption" / "[voice note] 12 s"; the name made printable.
std::string describe_media(const parley::content::v1::Media& m);
// A MIME type for a file name's extension ("application/octet-stream" if unknown).
std::string mime_type_of(const std::filesystem::path& name);

}  // namespace parley::client
