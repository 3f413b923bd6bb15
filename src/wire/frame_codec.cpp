#include "wire/frame_codec.hpp"

#include <algorithm>

#include <google/protobuf/stubs/logging.h>

#include "wire/username.hpp"

namespace parley::wire {
namespace {

using parley::v2::Frame;

protocol_error invalid(std::string message) {
  return {parley::v2::ERROR_CODE_INVALID_ARGUMENT, std::move(message)};
}

std::optional<protocol_error> check_username(const std::string& name, const char* field) {
  if (!is_valid_username(name)) {
    return invalid(std::string(field) + " must be 3-32 characters of [a-z0-9_.]");
  }
  return std::nullopt;
}

// A serialized Curve25519 public key as libsignal writes it: the type byte 0x05 and 32 bytes.
bool is_public_key(const std::string& key) { return key.size() == 33 && key[0] == '\x05'; }

protocol_error bad_key(std::string message) {
  return {parley::v2::ERROR_CODE_BAD_KEY, std::move(message)};
}

std::optional<protocol_error> check_upload(const parley::v2::UploadKeys& u, const limits& l) {
  if (!is_public_key(u.identity_key())) {
    return bad_key("identity_key must be 33 bytes: 0x05 and a Curve25519 key");
  }
  if (u.registration_id() == 0) return invalid("registration_id is required");
  if (u.has_signed_prekey()) {
    if (!is_public_key(u.signed_prekey().public_key())) {
      return bad_key("signed_prekey.public_key must be 33 bytes: 0x05 and a Curve25519 key");
    }
    if (u.signed_prekey().signature().size() != 64) {
      return protocol_error{parley::v2::ERROR_CODE_BAD_SIGNATURE,
                            "signed_prekey.signature must be 64 bytes"};
    }
  }
  if (static_cast<std::size_t>(u.one_time_prekeys_size()) > l.max_prekeys_per_upload) {
    return protocol_error{
        parley::v2::ERROR_CODE_TOO_MANY_PREKEYS,
        "at most " + std::to_string(l.max_prekeys_per_upload) + " one-time prekeys per upload"};
  }
  for (int i = 0; i < u.one_time_prekeys_size(); ++i) {
    if (!is_public_key(u.one_time_prekeys(i).public_key())) {
      return bad_key("one_time_prekeys[" + std::to_string(i) +
                     "].public_key must be 33 bytes: 0x05 and a Curve25519 key");
    }
    for (int j = 0; j < i; ++j) {
      if (u.one_time_prekeys(j).id() == u.one_time_prekeys(i).id()) {
        return invalid("one-time prekey id " + std::to_string(u.one_time_prekeys(i).id()) +
                       " appears twice");
      }
    }
  }
  return std::nullopt;
}

// A group's name: 1 to max_group_name_bytes bytes of UTF-8 (protobuf checks the UTF-8 of
// string fields as it parses).
std::optional<protocol_error> check_group_name(const std::string& name, const limits& l) {
  if (name.empty() || name.size() > l.max_group_name_bytes) {
    return invalid("name must be 1-" + std::to_string(l.max_group_name_bytes) + " bytes");
  }
  return std::nullopt;
}

// A chat named by exactly one of its id and (1:1) the peer's username.
std::optional<protocol_error> check_chat(std::uint64_t chat_id, const std::string& peer,
                                         const char* field) {
  if (chat_id != 0 && !peer.empty()) {
    return invalid(std::string("give chat_id or ") + field + ", not both");
  }
  if (chat_id != 0) return std::nullopt;
  if (peer.empty()) return invalid(std::string("chat_id or ") + field + " is required");
  return check_username(peer, field);
}

// A media id: 32 lowercase hex digits (media::valid_blob_id; the wire layer does not link
// the media module).
bool is_media_id(const std::string& id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// An S3 UploadId as the stores write them (AWS: URL-safe base64 with '.', '_', '-'; MinIO and
// s3rver: hex or a UUID). It only ever goes, encoded, into a URL the server signs.
bool is_upload_id(const std::string& id) {
  return !id.empty() && id.size() <= 1024 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
  });
}

std::optional<protocol_error> validate(const Frame& f, const limits& l) {
  switch (f.body_case()) {
    case Frame::kRegister:
      if (!is_valid_username(f.register_().username())) {
        return protocol_error{parley::v2::ERROR_CODE_INVALID_USERNAME,
                              "username must be 3-32 characters of [a-z0-9_.]"};
      }
      return std::nullopt;
    case Frame::kAuthenticate:
      if (f.authenticate().token().size() != 32) return invalid("token must be 32 bytes");
      return std::nullopt;
    case Frame::kSendMessage: {
      const auto& m = f.send_message();
      if (auto e = check_chat(m.chat_id(), m.to(), "to")) return e;
      if (m.client_msg_id().empty() || m.client_msg_id().size() > l.max_client_msg_id_bytes) {
        return invalid("client_msg_id must be 1-64 bytes");
      }
      if (m.payload().size() > l.max_payload_bytes) {
        return protocol_error{parley::v2::ERROR_CODE_PAYLOAD_TOO_LARGE,
                              "payload is " + std::to_string(m.payload().size()) +
                                  " bytes; the limit is " + std::to_string(l.max_payload_bytes)};
      }
      // Which of them the chat takes (1:1: SIGNAL / PREKEY; group: SENDER_KEY) is the
      // store's check.
      if (m.type() != parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE &&
          m.type() != parley::v2::CIPHER_TYPE_PREKEY_MESSAGE &&
          m.type() != parley::v2::CIPHER_TYPE_SENDER_KEY_MESSAGE) {
        return invalid(
            "type must be CIPHER_TYPE_SIGNAL_MESSAGE, CIPHER_TYPE_PREKEY_MESSAGE or "
            "CIPHER_TYPE_SENDER_KEY_MESSAGE");
      }
      if (!m.to().empty() && m.type() == parley::v2::CIPHER_TYPE_SENDER_KEY_MESSAGE) {
        return invalid("a message to a user (`to`) cannot be CIPHER_TYPE_SENDER_KEY_MESSAGE");
      }
      if (!m.media_id().empty() && !is_media_id(m.media_id())) {
        return invalid("media_id must be 32 lowercase hex digits");
      }
      return std::nullopt;
    }
    case Frame::kRequestUpload: {
      const auto& u = f.request_upload();
      if (u.size() == 0) return invalid("size is required");
      if (u.size() > l.max_media_bytes) {
        return protocol_error{parley::v2::ERROR_CODE_MEDIA_TOO_LARGE,
                              "size is " + std::to_string(u.size()) + " bytes; the limit is " +
                                  std::to_string(l.max_media_bytes) +
                                  " (100,000,000 bytes of file, encrypted)"};
      }
      if (u.sha256().size() != 32) return invalid("sha256 must be 32 bytes");
      return std::nullopt;
    }
    case Frame::kRequestUploadParts: {
      const auto& u = f.request_upload_parts();
      if (!is_media_id(u.media_id())) return invalid("media_id must be 32 lowercase hex digits");
      if (!is_upload_id(u.upload_id())) {
        return invalid("upload_id must be 1-1024 characters of [A-Za-z0-9._~+/=-]");
      }
      return std::nullopt;
    }
    case Frame::kRequestDownload:
      if (f.request_download().chat_id() == 0) return invalid("chat_id is required");
      if (f.request_download().seq() == 0) return invalid("seq is required");
      return std::nullopt;
    case Frame::kCreateGroup: {
      const auto& c = f.create_group();
      if (auto e = check_group_name(c.name(), l)) return e;
      if (c.client_request_id().empty() ||
          c.client_request_id().size() > l.max_client_msg_id_bytes) {
        return invalid("client_request_id must be 1-64 bytes");
      }
      // The creator may be listed, and names may repeat: the store counts the distinct
      // members exactly; this only bounds the frame.
      if (static_cast<std::size_t>(c.members_size()) > l.max_group_members) {
        return protocol_error{parley::v2::ERROR_CODE_GROUP_FULL,
                              "a group has at most " + std::to_string(l.max_group_members) +
                                  " members, the creator included"};
      }
      for (const auto& m : c.members()) {
        if (auto e = check_username(m, "members")) return e;
      }
      return std::nullopt;
    }
    case Frame::kUpdateGroup: {
      const auto& u = f.update_group();
      if (u.chat_id() == 0) return invalid("chat_id is required");
      switch (u.change()) {
        case parley::v2::GROUP_CHANGE_ADD:
        case parley::v2::GROUP_CHANGE_REMOVE:
        case parley::v2::GROUP_CHANGE_PROMOTE:
        case parley::v2::GROUP_CHANGE_DEMOTE:
          return check_username(u.user(), "user");
        case parley::v2::GROUP_CHANGE_RENAME:
          return check_group_name(u.name(), l);
        case parley::v2::GROUP_CHANGE_LEAVE:
          return std::nullopt;
        default:
          return invalid("change must be one of ADD, REMOVE, PROMOTE, DEMOTE, RENAME, LEAVE");
      }
    }
    case Frame::kGetGroup:
      if (f.get_group().chat_id() == 0) return invalid("chat_id is required");
      return std::nullopt;
    case Frame::kUploadKeys:
      return check_upload(f.upload_keys(), l);
    case Frame::kFetchKeys:
      return check_username(f.fetch_keys().username(), "username");
    case Frame::kAck:
      if (f.ack().cursors_size() == 0 ||
          static_cast<std::size_t>(f.ack().cursors_size()) > l.max_ack_cursors) {
        return invalid("ack must carry 1-" + std::to_string(l.max_ack_cursors) + " cursors");
      }
      for (const auto& c : f.ack().cursors()) {
        if (c.chat_id() == 0 || c.seq() == 0) return invalid("cursors need chat_id and seq");
      }
      return std::nullopt;
    case Frame::kMarkRead:
      if (f.mark_read().chat_id() == 0) return invalid("chat_id is required");
      if (f.mark_read().up_to_seq() == 0) return invalid("up_to_seq is required");
      return std::nullopt;
    case Frame::kGetStatus:
      if (f.get_status().chat_id() == 0) return invalid("chat_id is required");
      if (f.get_status().seq() == 0) return invalid("seq is required");
      return std::nullopt;
    case Frame::kGetHistory:
      if (auto e = check_chat(f.get_history().chat_id(), f.get_history().peer(), "peer")) return e;
      if (f.get_history().limit() > l.max_history_limit) {
        return invalid("limit must be at most " + std::to_string(l.max_history_limit));
      }
      return std::nullopt;
    case Frame::kSubscribePresence: {
      const auto& names = f.subscribe_presence().usernames();
      if (names.empty() || static_cast<std::size_t>(names.size()) > l.max_presence_usernames) {
        return invalid("usernames must hold 1-" + std::to_string(l.max_presence_usernames) +
                       " names");
      }
      for (const auto& n : names) {
        if (auto e = check_username(n, "usernames")) return e;
      }
      return std::nullopt;
    }
    case Frame::kTyping:
      return check_username(f.typing().peer(), "peer");
    case Frame::kPing:
    case Frame::kSetPrivacy:
      return std::nullopt;
    case Frame::BODY_NOT_SET:
      return protocol_error{parley::v2::ERROR_CODE_BAD_FRAME, "frame has no body"};
    default:
      return protocol_error{parley::v2::ERROR_CODE_UNSUPPORTED,
                            "that frame type is sent by servers, not clients"};
  }
}

}  // namespace

std::optional<protocol_error> decode_request(std::string_view bytes, const limits& l, Frame& out) {
  if (bytes.size() > l.max_frame_bytes) {
    out.Clear();
    return protocol_error{parley::v2::ERROR_CODE_BAD_FRAME, "frame too large"};
  }
  if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    out.Clear();  // a half-parsed request_id means nothing: the error goes out with id 0
    return protocol_error{parley::v2::ERROR_CODE_BAD_FRAME, "not a parley.v2.Frame"};
  }
  return validate(out, l);
}

std::optional<protocol_error> decode_push(std::string_view bytes, Frame& out) {
  if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return protocol_error{parley::v2::ERROR_CODE_BAD_FRAME, "not a parley.v2.Frame"};
  }
  if (out.body_case() == Frame::BODY_NOT_SET) {
    return protocol_error{parley::v2::ERROR_CODE_BAD_FRAME, "frame has no body"};
  }
  return std::nullopt;
}

void silence_protobuf_logging() { google::protobuf::SetLogHandler(nullptr); }

encoded_frame encode(const Frame& frame) {
  return std::make_shared<const std::string>(frame.SerializeAsString());
}

Frame make_error(std::uint64_t request_id, parley::v2::ErrorCode code, std::string message) {
  Frame f;
  f.set_request_id(request_id);
  auto* e = f.mutable_error();
  e->set_code(code);
  e->set_message(std::move(message));
  return f;
}

}  // namespace parley::wire
