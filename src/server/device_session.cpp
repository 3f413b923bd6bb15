#include "server/device_session.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "e2ee/key_check.hpp"
#include "media/blob_store.hpp"
#include "server/store_call.hpp"
#include "wire/scratch_arena.hpp"

namespace parley::server {
namespace asio = boost::asio;
namespace v2 = parley::v2;
using asio::awaitable;
using asio::use_awaitable;

namespace {

store::sha256_digest sha256(std::string_view bytes) {
  store::sha256_digest d;
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d.data());
  return d;
}

v2::ErrorCode to_protocol(const boost::system::error_code& ec) {
  if (ec.category() == store::store_category()) {
    switch (static_cast<store::errc>(ec.value())) {
      case store::errc::username_taken:
        return v2::ERROR_CODE_USERNAME_TAKEN;
      case store::errc::unknown_user:
        return v2::ERROR_CODE_UNKNOWN_USER;
      case store::errc::not_found:
        return v2::ERROR_CODE_NOT_FOUND;
      case store::errc::shutting_down:
        return v2::ERROR_CODE_SHUTTING_DOWN;
      case store::errc::stale_keys:
        return v2::ERROR_CODE_STALE_KEYS;
      case store::errc::no_keys:
        return v2::ERROR_CODE_NO_KEYS;
      case store::errc::missing_signed_prekey:
        return v2::ERROR_CODE_BAD_KEY;
      case store::errc::too_many_prekeys:
        return v2::ERROR_CODE_TOO_MANY_PREKEYS;
      case store::errc::unavailable:
        return v2::ERROR_CODE_STORAGE_UNAVAILABLE;
      case store::errc::self_message:
      case store::errc::invalid_argument:
        return v2::ERROR_CODE_INVALID_ARGUMENT;
      case store::errc::busy:
        return v2::ERROR_CODE_BUSY;
      case store::errc::not_admin:
        return v2::ERROR_CODE_NOT_ADMIN;
      case store::errc::group_full:
        return v2::ERROR_CODE_GROUP_FULL;
      case store::errc::not_member:
        return v2::ERROR_CODE_NOT_MEMBER;
      case store::errc::already_member:
        return v2::ERROR_CODE_ALREADY_MEMBER;
      case store::errc::quota_exceeded:
        return v2::ERROR_CODE_QUOTA_EXCEEDED;
      case store::errc::media_not_found:
        return v2::ERROR_CODE_MEDIA_NOT_FOUND;
      case store::errc::io_error:
      case store::errc::corrupt:
        return v2::ERROR_CODE_INTERNAL;
    }
  }
  return v2::ERROR_CODE_INTERNAL;
}

// How long a client should wait before retrying a write the store refused: a full disk
// takes an operator, a full writer queue a moment.
constexpr std::uint32_t storage_retry_after_ms = 1'000;
constexpr std::uint32_t busy_retry_after_ms = 100;

// The error for a store failure; STORAGE_UNAVAILABLE and BUSY say when to retry. BUSY
// refusals are counted (parley_store_busy_total).
v2::Frame store_error(std::uint64_t request_id, const boost::system::error_code& ec,
                      metrics& stats) {
  if (ec == store::errc::busy) stats.store_busy.fetch_add(1, std::memory_order_relaxed);
  auto f = wire::make_error(request_id, to_protocol(ec), ec.message());
  if (ec == store::errc::unavailable) f.mutable_error()->set_retry_after_ms(storage_retry_after_ms);
  if (ec == store::errc::busy) f.mutable_error()->set_retry_after_ms(busy_retry_after_ms);
  return f;
}

// What a contact may see: last seen rounded down to the minute, and none at all from a user
// who hides it (docs/security.md, "Presence").
v2::Frame presence_frame(const std::string& username, const presence::state& s) {
  v2::Frame f;
  auto* p = f.mutable_presence();
  p->set_username(username);
  p->set_online(s.online);
  if (s.last_seen_hidden) {
    p->set_last_seen_hidden(true);
  } else if (!s.online) {
    p->set_last_seen_ms(s.last_seen_ms / 60'000 * 60'000);
  }
  return f;
}

void to_wire(const store::group_info& g, v2::GroupInfo& out) {
  out.set_chat_id(g.chat);
  out.set_name(g.name);
  for (const auto& m : g.members) {
    auto* member = out.add_members();
    member->set_user(m.username);
    member->set_admin(m.admin);
    member->set_joined_seq(m.joined_seq);
  }
}

v2::Frame pong_for(std::uint64_t request_id) {
  v2::Frame pong;
  pong.set_request_id(request_id);
  pong.mutable_pong();
  return pong;
}

void log_failure(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log_error() << "session task failed: " << ex.what();
  }
}

}  // namespace

device_session::device_session(shared_state& state, asio::any_io_executor executor,
                               std::string peer_address, std::function<void(close_reason)> close,
                               std::function<void()> wake_writer)
    : state_(state),
      executor_(executor),
      peer_address_(std::move(peer_address)),
      close_(std::move(close)),
      wake_writer_(std::move(wake_writer)) {}

// --- outgoing queue ----------------------------------------------------------------------------

bool device_session::has_room(std::size_t bytes) const {
  return outgoing_.size() - outgoing_head_ < state_.cfg.max_outbound_frames &&
         outgoing_bytes_ + bytes <= state_.cfg.max_outbound_bytes;
}

bool device_session::send_encoded(wire::encoded_frame f) {
  if (closed_ || finishing_) return false;
  if (!has_room(f->size())) {
    log_info() << "closing slow reader (device " << device_
               << "): " << outgoing_.size() - outgoing_head_ << " frames, " << outgoing_bytes_
               << " bytes queued";
    state_.stats.slow_readers_closed.fetch_add(1, std::memory_order_relaxed);
    // Once: every later frame for this connection is dropped quietly until it is gone.
    finishing_ = true;
    close(close_reason::slow_reader);
    return false;
  }
  outgoing_bytes_ += f->size();
  outgoing_.push_back(std::move(f));
  if (wake_writer_) wake_writer_();
  return true;
}

bool device_session::send(const frame& f) { return send_encoded(wire::encode(f)); }

bool device_session::below_drain_watermark(std::size_t bytes) const {
  const std::size_t frames = outgoing_.size() - outgoing_head_;
  // An empty queue takes any frame that fits the hard limit, so a frame larger than half of
  // max_outbound_bytes can still be sent.
  if (frames == 0) return has_room(bytes);
  return frames < state_.cfg.max_outbound_frames / 2 &&
         outgoing_bytes_ + bytes <= state_.cfg.max_outbound_bytes / 2;
}

std::size_t device_session::history_answer_bytes() const {
  return state_.cfg.limits.max_history_bytes + 128 * 1024;
}

void device_session::release_answer_bytes(std::size_t bytes) {
  answer_bytes_promised_ -= bytes;
  if (room_ready_) room_ready_->cancel();  // a read_pause may be waiting for this
}

// Below half the queue's limits, counting the History answers under way at their largest
// (unlike below_drain_watermark, no exception for an empty queue: what is promised is not
// queued yet). So queued frames and promised answers together stay within the limits, and a
// client's own requests never close it as a slow reader.
bool device_session::read_room() const {
  return outgoing_.size() - outgoing_head_ < state_.cfg.max_outbound_frames / 2 &&
         outgoing_bytes_ + answer_bytes_promised_ <= state_.cfg.max_outbound_bytes / 2;
}

std::optional<awaitable<void>> device_session::read_pause() {
  if (!authenticated() || closed_ || finishing_ || read_room()) return std::nullopt;
  return wait_below_watermark();
}

awaitable<void> device_session::wait_below_watermark() {
  auto self = shared_from_this();
  while (!closed_ && !finishing_ && !read_room()) co_await room_made();
}

awaitable<void> device_session::room_made() {
  // Created on first need: most sessions never fill their queue. Its expiry is set once:
  // setting it cancels the waits under way, and two waiters (a drain's tail and the next
  // drain, say) would then wake each other in turn for as long as the queue stays full.
  // cancel() (when the writer makes room, a History answer is queued, or at the close) wakes
  // every waiter.
  if (!room_ready_) {
    room_ready_ = std::make_unique<asio::steady_timer>(executor_);
    room_ready_->expires_at(asio::steady_timer::time_point::max());
  }
  boost::system::error_code ec;
  co_await room_ready_->async_wait(asio::redirect_error(use_awaitable, ec));
}

awaitable<bool> device_session::send_paced(wire::encoded_frame f) {
  while (!closed_ && !finishing_ && !below_drain_watermark(f->size())) co_await room_made();
  if (closed_ || finishing_) co_return false;
  co_return send_encoded(std::move(f));
}

wire::encoded_frame device_session::pop_outgoing() {
  if (closed_ || outgoing_head_ == outgoing_.size()) return nullptr;
  auto f = std::move(outgoing_[outgoing_head_++]);
  if (outgoing_head_ == outgoing_.size()) {
    outgoing_.clear();
    outgoing_head_ = 0;
    if (outgoing_.capacity() > 64) outgoing_.shrink_to_fit();  // idle again: give it back
  } else if (outgoing_head_ >= 64 && outgoing_head_ * 2 >= outgoing_.size()) {
    // Never empty under steady load: drop the sent prefix (amortized O(1) per frame).
    outgoing_.erase(outgoing_.begin(),
                    outgoing_.begin() + static_cast<std::ptrdiff_t>(outgoing_head_));
    outgoing_head_ = 0;
  }
  outgoing_bytes_ -= f->size();
  if (room_ready_) room_ready_->cancel();
  state_.stats.frames_out.fetch_add(1, std::memory_order_relaxed);
  return f;
}

void device_session::reject(std::uint64_t request_id, v2::ErrorCode code, std::string message) {
  state_.stats.bad_frames.fetch_add(1, std::memory_order_relaxed);
  send(wire::make_error(request_id, code, std::move(message)));
  if (++bad_frames_ >= state_.cfg.max_bad_frames) close(close_reason::protocol_violation);
}

void device_session::refuse_rate(std::uint64_t request_id, std::chrono::milliseconds wait,
                                 const char* what) {
  state_.stats.rate_limited.fetch_add(1, std::memory_order_relaxed);
  auto f = wire::make_error(
      request_id, v2::ERROR_CODE_RATE_LIMITED,
      std::string("too many ") + what + "; retry in " + std::to_string(wait.count()) + " ms");
  f.mutable_error()->set_retry_after_ms(static_cast<std::uint32_t>(
      std::min<std::chrono::milliseconds::rep>(wait.count(), UINT32_MAX)));
  send(f);
}

bool device_session::within_rate(rate_limiter& limiter, std::string_view key,
                                 std::uint64_t request_id, const char* what) {
  const auto wait = limiter.take(key);
  if (wait.count() == 0) return true;
  refuse_rate(request_id, wait, what);
  return false;
}

std::string device_session::device_key() const { return std::to_string(device_); }

void device_session::log_auth_failure(std::uint64_t device_id) {
  state_.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
  // One line per failure for fail2ban and the like, but at most 10 a second for the server
  // as a whole: a flood of bad logins cannot flood the log.
  static rate_limiter lines(rate_limit{600, 10});
  static std::atomic<std::uint64_t> suppressed{0};
  if (lines.take("").count() != 0) {
    suppressed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto line = log_warn();
  line << "authentication failed for device " << device_id << " from " << peer_address_;
  if (const auto n = suppressed.exchange(0)) line << " (" << n << " more not logged)";
}

void device_session::close(close_reason reason) {
  if (closed_) return;
  auto fn = std::move(close_);
  close_ = nullptr;
  if (fn) fn(reason);
}

void device_session::finish() {
  finishing_ = true;
  if (room_ready_) room_ready_->cancel();
  if (wake_writer_) wake_writer_();
}

void device_session::closed() {
  if (closed_) return;
  closed_ = true;
  outgoing_.clear();
  outgoing_head_ = 0;
  outgoing_bytes_ = 0;
  if (room_ready_) room_ready_->cancel();
  if (presence_subscription_) state_.presence.unsubscribe(*presence_subscription_);
  if (device_ != 0) {
    state_.bus.detach(device_, this);
    state_.presence.disconnected(username_, now_ms());
  }
}

// --- pushes from the bus (any thread) ----------------------------------------------------------

void device_session::push_message(bus::shared_envelope e) {
  lane().post([self = shared_from_this(), e = std::move(e)] { self->on_message(e); });
}

void device_session::push_receipts(std::vector<store::watermark> marks) {
  lane().post(
      [self = shared_from_this(), marks = std::move(marks)] { self->on_receipts(marks); });
}

void device_session::push_ephemeral(wire::encoded_frame frame) {
  asio::post(executor_, [self = shared_from_this(), frame = std::move(frame)]() mutable {
    // Ephemeral frames are dropped, not fatal, when the queue is full.
    if (!self->closed_ && self->has_room(frame->size())) self->send_encoded(std::move(frame));
  });
}

void device_session::replaced() {
  asio::post(executor_, [self = shared_from_this()] { self->close(close_reason::replaced); });
}

void device_session::resync() {
  lane().post([self = shared_from_this()] {
    if (self->closed_ || !self->authenticated()) return;
    self->unsure_ = false;  // the bus is back: the drain covers what it lost
    self->read_log_again();
  });
}

void device_session::pushes_may_be_lost() {
  lane().post([self = shared_from_this()] { self->unsure_ = true; });
}

void device_session::read_log_again() {
  if (draining_) {
    dirty_ = true;  // the running drain reads again
    return;
  }
  // A drain like the one after authentication: what is above the device's cursor (and not
  // pushed since), the current watermarks, then QueueEmpty again.
  draining_ = true;
  asio::co_spawn(executor_, drain(0), log_failure);
}

bool device_session::follows(std::uint64_t chat, std::uint64_t seq) const {
  const std::uint64_t last = pushed(chat);
  return seq == last + 1 || (last == 0 && !unsure_);
}

void device_session::saw_own(std::uint64_t chat, std::uint64_t seq) {
  // Only right after what the connection has seen of the chat. Anything else is left as it
  // is: the seq before this one may still be on its way from another node (its push, in
  // flight over Redis, comes after this device's own later message was answered here), and
  // taking this seq as seen would drop that push as one already sent. A later push then
  // finds the gap and reads the log, which covers this one too.
  if (closed_ || draining_ || checking(chat)) return;
  if (seq == pushed(chat) + 1) set_pushed(chat, seq);
}

const std::uint64_t* device_session::pushed_entry(std::uint64_t chat) const {
  if (!pushed_) return nullptr;
  auto it = std::lower_bound(pushed_->begin(), pushed_->end(), std::make_pair(chat, std::uint64_t{0}));
  return it != pushed_->end() && it->first == chat ? &it->second : nullptr;
}

std::uint64_t device_session::pushed(std::uint64_t chat) const {
  const auto* seq = pushed_entry(chat);
  return seq != nullptr && *seq != checking_mark ? *seq : 0;
}

bool device_session::checking(std::uint64_t chat) const {
  const auto* seq = pushed_entry(chat);
  return seq != nullptr && *seq == checking_mark;
}

void device_session::set_pushed(std::uint64_t chat, std::uint64_t seq) {
  if (!pushed_) pushed_ = std::make_unique<std::vector<std::pair<std::uint64_t, std::uint64_t>>>();
  auto it = std::lower_bound(pushed_->begin(), pushed_->end(), std::make_pair(chat, std::uint64_t{0}));
  if (it != pushed_->end() && it->first == chat) {
    it->second = seq;
  } else {
    pushed_->insert(it, {chat, seq});
  }
}

void device_session::on_message(const bus::shared_envelope& e) {
  if (closed_) return;
  if (draining_) {
    dirty_ = true;  // the drain will read it from the store
    return;
  }
  const auto& m = e->message();
  if (checking(m.chat)) {
    recheck_ = true;  // the check reads the log again when it ends
    return;
  }
  const std::uint64_t last = pushed(m.chat);
  if (m.seq <= last) return;  // already sent by the drain
  // On a cluster, a chat's first push on this connection may not be the next one the device
  // lacks (an earlier push went to the node the device just left, or was overtaken by one
  // from another node): checked against the device's cursor first.
  if (last == 0 && m.seq > 1 && !unsure_ && !state_.bus.pushes_in_commit_order()) {
    set_pushed(m.chat, checking_mark);
    state_.stats.first_push_checks.fetch_add(1, std::memory_order_relaxed);
    asio::co_spawn(executor_, check_first_push(e), log_failure);
    return;
  }
  // A push that does not follow what this connection saw of the chat: one before it was lost
  // on the way (the cluster's bus was down, or routed it to where the device was before). Not
  // sent out of order: the log has both, and a drain pass sends them in order.
  if (!follows(m.chat, m.seq)) {
    state_.stats.gap_rereads.fetch_add(1, std::memory_order_relaxed);
    read_log_again();
    return;
  }
  if (send_encoded(e->frame())) set_pushed(m.chat, m.seq);
}

awaitable<void> device_session::check_first_push(bus::shared_envelope e) {
  auto self = shared_from_this();
  const auto& m = e->message();
  auto cursor = co_await store_call<std::uint64_t>([&](store::completion<std::uint64_t> done) {
    state_.store.device_cursor(device_, user_, m.chat, std::move(done));
  });
  if (closed_) co_return;
  const bool again = std::exchange(recheck_, false);
  if (!checking(m.chat) || !cursor || draining_) {
    // A drain took the chat over meanwhile, or the cursor could not be read: the log decides
    // (a running drain reads again).
    if (checking(m.chat)) set_pushed(m.chat, 0);
    read_log_again();
    co_return;
  }
  // What the device has acknowledged counts as seen: nothing at or below it is pushed again.
  set_pushed(m.chat, *cursor);
  if (m.seq > *cursor + 1) {
    // One before it was lost on the way here, or is still coming: the log sends both, in order.
    state_.stats.gap_rereads.fetch_add(1, std::memory_order_relaxed);
    read_log_again();
    co_return;
  }
  if (m.seq == *cursor + 1 && send_encoded(e->frame())) set_pushed(m.chat, m.seq);
  // Pushes of this chat that came during the check were held back: the log has them.
  if (again) read_log_again();
}

void device_session::on_receipts(const std::vector<store::watermark>& marks) {
  if (closed_ || marks.empty()) return;
  // Receipts are not stored per device: if a full queue closes the connection, they are sent
  // again, as current watermarks, after the next authentication.
  for (auto& f : bus::receipts_frames(marks)) send_encoded(std::move(f));
}

// --- requests ------------------------------------------------------------------------------------

std::optional<awaitable<void>> device_session::handle_frame(std::string_view bytes) {
  state_.stats.frames_in.fetch_add(1, std::memory_order_relaxed);
  // Parsed into the thread's scratch arena: `request` ends with this call. What outlives it
  // is moved out (SendMessage's strings) or copied (a request run as a coroutine).
  wire::scratch_arena scratch;
  frame& request = scratch.make<frame>();
  if (auto error = wire::decode_request(bytes, state_.cfg.limits, request)) {
    reject(request.request_id(), error->code, std::move(error->message));
    return std::nullopt;
  }
  const std::uint64_t id = request.request_id();

  if (!authenticated()) {
    switch (request.body_case()) {
      case frame::kRegister:
        bad_frames_ = 0;
        if (!within_rate(state_.limiters.register_per_address, peer_address_, id,
                         "registrations from this address") ||
            !within_rate(state_.limiters.register_global, {}, id, "registrations")) {
          return std::nullopt;
        }
        return on_register(id, request.register_());  // a copy: it outlives `request`
      case frame::kAuthenticate:
        // An address that failed too often is refused before its token is even looked at.
        if (auto wait = state_.limiters.bad_login_per_address.wait_for(peer_address_);
            wait.count() > 0) {
          refuse_rate(id, wait, "failed logins from this address");
          return std::nullopt;
        }
        return on_authenticate(id, request.authenticate());  // a copy, as above
      case frame::kPing:
        send(pong_for(id));
        return std::nullopt;
      default:
        reject(id, v2::ERROR_CODE_UNAUTHENTICATED, "authenticate first");
        return std::nullopt;
    }
  }

  // A bad signature is only found after decoding: an upload does not reset the count of
  // consecutive bad frames until it has succeeded, so bad uploads close the connection too.
  if (request.body_case() != frame::kUploadKeys) bad_frames_ = 0;
  switch (request.body_case()) {
    case frame::kRegister:
    case frame::kAuthenticate:
      reject(id, v2::ERROR_CODE_ALREADY_AUTHENTICATED, "this connection is authenticated");
      return std::nullopt;
    case frame::kPing:
      send(pong_for(id));
      return std::nullopt;
    case frame::kTyping:
      if (!within_rate(state_.limiters.typing_per_device, device_key(), id, "typing indicators"))
        return std::nullopt;
      break;
    case frame::kSendMessage:
      if (!within_rate(state_.limiters.send_per_device, device_key(), id, "messages"))
        return std::nullopt;
      break;
    case frame::kFetchKeys:
      if (!within_rate(state_.limiters.key_fetch_per_device, device_key(), id, "key fetches"))
        return std::nullopt;
      break;
    case frame::kCreateGroup:
    case frame::kUpdateGroup:
      if (!within_rate(state_.limiters.group_change_per_device, device_key(), id,
                       "group changes"))
        return std::nullopt;
      break;
    case frame::kGetGroup:
      if (!within_rate(state_.limiters.group_read_per_device, device_key(), id,
                       "member lists"))
        return std::nullopt;
      break;
    case frame::kGetStatus:
      if (request.get_status().detail() &&
          !within_rate(state_.limiters.group_read_per_device, device_key(), id, "member lists"))
        return std::nullopt;
      break;
    case frame::kRequestUpload:
    case frame::kRequestUploadParts:
    case frame::kRequestDownload:
      if (!within_rate(state_.limiters.media_per_device, device_key(), id, "media requests"))
        return std::nullopt;
      break;
    default:
      break;
  }

  if (in_flight_ >= state_.cfg.max_in_flight) {
    reject(id, v2::ERROR_CODE_TOO_MANY_IN_FLIGHT,
           "more than " + std::to_string(state_.cfg.max_in_flight) + " requests in flight");
    return std::nullopt;
  }
  ++in_flight_;
  // Its answer may be large: counted from now (read_pause), given back once it is queued.
  if (request.body_case() == frame::kGetHistory) answer_bytes_promised_ += history_answer_bytes();
  switch (request.body_case()) {
    case frame::kSendMessage:
      on_send(id, *request.mutable_send_message());
      return std::nullopt;
    case frame::kAck:
      on_ack(id, request.ack());
      return std::nullopt;
    default:
      break;
  }
  // Spawned so that a connection can pipeline requests; each reaches the store in the order
  // received (store_call submits synchronously at its first co_await).
  // A request that throws (no memory, say) still gets its one answer, INTERNAL ("nothing was
  // applied" is as true as it can be told), and gives back its place in flight.
  asio::co_spawn(executor_, run_request(frame(request)),
                 [self = shared_from_this(), id](const std::exception_ptr& e) {
                   if (!e) return;
                   log_failure(e);
                   --self->in_flight_;
                   self->send(wire::make_error(id, v2::ERROR_CODE_INTERNAL, "internal error"));
                 });
  return std::nullopt;
}

awaitable<void> device_session::on_register(std::uint64_t request_id, v2::Register r) {
  std::string token(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(token.data()), 32) != 1) {
    send(wire::make_error(request_id, v2::ERROR_CODE_INTERNAL, "no randomness available"));
    co_return;
  }
  store::registration_request req{r.username(), sha256(token)};
  auto self = shared_from_this();
  auto result =
      co_await store_call<store::registration>([&](store::completion<store::registration> done) {
        state_.store.register_account(std::move(req), std::move(done));
      });
  if (!result) {
    send(store_error(request_id, result.error(), state_.stats));
    co_return;
  }
  frame reply;
  reply.set_request_id(request_id);
  auto* out = reply.mutable_registered();
  out->set_user_id(result->user);
  out->set_device_id(result->device);
  out->set_token(token);
  send(reply);
  OPENSSL_cleanse(token.data(), token.size());
}

awaitable<void> device_session::on_authenticate(std::uint64_t request_id, v2::Authenticate a) {
  auto self = shared_from_this();
  const std::uint64_t device_id = a.device_id();
  const auto presented = sha256(a.token());
  auto found = co_await store_call<store::device>([&](store::completion<store::device> done) {
    state_.store.find_device(device_id, std::move(done));
  });
  // Closing already (the authentication timeout, the peer's close): attaching now would close
  // the device's other, healthy connection (4001) for one that is going.
  if (closed_ || finishing_) co_return;
  const bool ok =
      found && CRYPTO_memcmp(found->token_hash.data(), presented.data(), presented.size()) == 0;
  if (!ok) {
    if (!found && found.error() != store::errc::not_found) {
      // As every request's store failure: STORAGE_UNAVAILABLE and BUSY with retry_after_ms.
      send(store_error(request_id, found.error(), state_.stats));
      co_return;
    }
    // Unknown device and wrong token look the same to the client.
    state_.limiters.bad_login_per_address.take(peer_address_);
    log_auth_failure(device_id);
    reject(request_id, v2::ERROR_CODE_AUTH_FAILED, "unknown device or wrong token");
    if (++auth_failures_ >= 3) close(close_reason::protocol_violation);
    co_return;
  }

  device_ = found->id;
  user_ = found->user;
  username_ = found->username;
  draining_ = true;  // before attach: pushes from now on are found by the drain
  state_.bus.attach(device_, username_, shared_from_this());
  state_.presence.connected(username_, found->hide_last_seen);

  frame reply;
  reply.set_request_id(request_id);
  auto* out = reply.mutable_authenticated();
  out->set_user_id(user_);
  out->set_username(username_);
  out->set_has_keys(found->keys.has_keys);
  out->set_one_time_prekeys(found->keys.one_time_prekeys);
  out->set_registration_id(found->keys.registration_id);
  out->set_hide_last_seen(found->hide_last_seen);
  send(reply);
  asio::co_spawn(executor_, drain(a.receipts_since()), log_failure);
}

awaitable<void> device_session::drain(std::uint64_t receipts_since) {
  auto self = shared_from_this();
  std::uint64_t drained = 0;
  // The watermarks and stamp of the first pass (later passes only pick up messages that
  // arrived meanwhile; receipts that moved meanwhile were pushed live).
  std::vector<store::watermark> marks;
  std::optional<std::uint64_t> receipts_stamp;
  // Chats whose only entries above the cursor are this device's own: the drain moves the
  // cursor past them itself, so that the next login does not read them again.
  std::vector<store::cursor_update> own_tail;
  for (;;) {
    dirty_ = false;
    auto backlog = co_await store_call<store::device_backlog>(
        [&](store::completion<store::device_backlog> done) {
          state_.store.backlog(device_, user_, receipts_since, std::move(done));
        });
    if (closed_) co_return;
    if (!backlog) {
      log_error() << "drain of device " << device_ << " failed: " << backlog.error().message();
      close(close_reason::internal);
      co_return;
    }
    if (!receipts_stamp) {
      receipts_stamp = backlog->stamp;
      marks = std::move(backlog->marks);
    }
    std::uint64_t sent_this_pass = 0;
    for (auto p : backlog->behind) {
      const std::uint64_t cursor = p.cursor;
      p.cursor = std::max(cursor, pushed(p.chat));
      if (p.head <= p.cursor) continue;
      if (p.own_only) {  // the store checked: nothing above the stored cursor is for this device
        set_pushed(p.chat, p.head);
        own_tail.push_back({p.chat, p.head});
        continue;
      }
      auto sent = co_await drain_chat(p);
      if (!sent) co_return;
      sent_this_pass += *sent;
      // Nothing above the stored cursor was for this device: only its own messages.
      if (*sent == 0 && p.cursor == cursor) own_tail.push_back({p.chat, p.head});
    }
    drained += sent_this_pass;
    if (!dirty_) break;
  }
  draining_ = false;
  if (!own_tail.empty()) {
    // All or nothing: a failure leaves every one of these chats to the next login's drain.
    state_.store.pass_own_entries(device_, user_, std::move(own_tail),
                                  [device = device_](const store::result<void>& r) {
                                    if (!r) {
                                      log_warn() << "device " << device
                                                 << ": its cursors past its own messages did "
                                                    "not move: "
                                                 << r.error().message();
                                    }
                                  });
  }
  for (auto& f : bus::receipts_frames(marks)) {
    if (!co_await send_paced(std::move(f))) co_return;
  }
  frame done;
  done.mutable_queue_empty()->set_drained(drained);
  done.mutable_queue_empty()->set_receipts_stamp(receipts_stamp.value_or(0));
  co_await send_paced(wire::encode(done));
}

awaitable<std::optional<std::uint64_t>> device_session::drain_chat(store::chat_position p) {
  std::uint64_t sent = 0;
  std::uint64_t after = p.cursor;
  while (after < p.head) {
    auto page = co_await store_call<std::vector<store::shared_message>>(
        [&](store::completion<std::vector<store::shared_message>> done) {
          state_.store.read_log(p.chat, after, p.head, state_.cfg.drain_page,
                                state_.cfg.limits.max_history_bytes, std::move(done));
        });
    if (closed_) co_return std::nullopt;
    if (!page) {
      log_error() << "drain of device " << device_ << " failed: " << page.error().message();
      close(close_reason::internal);
      co_return std::nullopt;
    }
    if (page->empty()) break;
    for (auto& m : *page) {
      after = m->seq;
      // A device is never sent what it sent itself (but it has seen it).
      if (m->sender_device == device_) {
        set_pushed(p.chat, after);
        continue;
      }
      bus::envelope e(std::move(m));
      if (!co_await send_paced(e.frame())) co_return std::nullopt;
      set_pushed(p.chat, after);
      ++sent;
    }
  }
  co_return sent;
}

void device_session::request_done() { --in_flight_; }

void device_session::on_send(std::uint64_t request_id, v2::SendMessage& m) {
  store::send_request req{user_,
                          device_,
                          username_,
                          store::chat_ref{m.chat_id(), std::move(*m.mutable_to())},
                          std::move(*m.mutable_client_msg_id()),
                          std::move(*m.mutable_payload()),
                          static_cast<std::uint32_t>(m.type()),
                          m.recipient_registration_id(),
                          std::move(*m.mutable_media_id())};
  // The completion runs on the store's writer, in commit order: the recipients are handed the
  // entry there (so each sees a chat's messages in seq order), and the answer goes to this
  // connection's lane. No encoding here: the recipients' threads encode the envelope once.
  state_.store.send(std::move(req), [self = shared_from_this(), request_id](
                                        store::result<store::send_outcome> r) mutable {
    if (r && !r->duplicate) {
      self->state_.bus.deliver_message(r->recipients, std::make_shared<bus::envelope>(r->message));
    }
    auto& lane = self->lane();
    lane.post([self = std::move(self), request_id, r = std::move(r)] {
      self->answer_send(request_id, r);
    });
  });
}

void device_session::answer_send(std::uint64_t request_id,
                                 const store::result<store::send_outcome>& r) {
  request_done();
  if (!r) {
    send(store_error(request_id, r.error(), state_.stats));
    return;
  }
  if (!r->duplicate) {
    state_.stats.messages_stored.fetch_add(1, std::memory_order_relaxed);
    saw_own(r->chat, r->seq);
  }
  wire::scratch_arena scratch;  // encoded by send() before the return
  auto& reply = scratch.make<frame>();
  reply.set_request_id(request_id);
  auto* out = reply.mutable_send_result();
  out->set_message_id(r->id);
  out->set_seq(r->seq);
  out->set_sent_at_ms(r->sent_at_ms);
  out->set_duplicate(r->duplicate);
  out->set_chat_id(r->chat);
  send(reply);
}

void device_session::on_ack(std::uint64_t request_id, const v2::Ack& a) {
  std::vector<store::cursor_update> cursors;
  cursors.reserve(static_cast<std::size_t>(a.cursors_size()));
  for (const auto& c : a.cursors()) cursors.push_back({c.chat_id(), c.seq()});
  state_.store.ack(device_, user_, std::move(cursors),
                   [self = shared_from_this(),
                    request_id](store::result<store::watermark_moves> r) mutable {
                     if (r) {
                       self->state_.bus.deliver_receipts(r->receipts);
                       self->state_.groups.moved(r->groups);
                     }
                     std::optional<boost::system::error_code> error;
                     if (!r) error = r.error();
                     auto& lane = self->lane();
                     lane.post([self = std::move(self), request_id, error] {
                       self->request_done();
                       if (error) {
                         self->send(store_error(request_id, *error, self->state_.stats));
                       } else if (request_id != 0) {
                         frame reply;
                         reply.set_request_id(request_id);
                         reply.mutable_ok();
                         self->send(reply);
                       }
                     });
                   });
}

awaitable<void> device_session::run_request(frame request) {
  auto self = shared_from_this();
  const std::uint64_t id = request.request_id();
  frame reply;
  reply.set_request_id(id);
  bus::bus& bus = state_.bus;
  auto fail = [&](const boost::system::error_code& ec) { send(store_error(id, ec, state_.stats)); };

  switch (request.body_case()) {
    case frame::kMarkRead: {
      const auto& m = request.mark_read();
      auto& groups = state_.groups;
      auto r = co_await store_call<store::watermark_moves>(
          [&](store::completion<store::watermark_moves> done) {
            state_.store.mark_read(
                user_, m.chat_id(), m.up_to_seq(),
                [&bus, &groups, done = std::move(done)](store::result<store::watermark_moves> r) {
                  if (r) {
                    bus.deliver_receipts(r->receipts);
                    groups.moved(r->groups);
                  }
                  done(std::move(r));
                });
          });
      if (!r) {
        fail(r.error());
        break;
      }
      reply.mutable_ok();
      send(reply);
      break;
    }
    case frame::kGetStatus: {
      const auto& q = request.get_status();
      auto r = co_await store_call<store::status_report>(
          [&](store::completion<store::status_report> done) {
            state_.store.status(user_, q.chat_id(), q.seq(), q.detail(), std::move(done));
          });
      if (!r) {
        fail(r.error());
        break;
      }
      auto* out = reply.mutable_status_result();
      out->set_chat_id(q.chat_id());
      out->set_seq(q.seq());
      out->set_status(static_cast<v2::MessageStatus>(r->status));
      out->set_recipients(r->recipients);
      out->set_delivered(r->delivered);
      out->set_read(r->read);
      for (auto& n : r->delivered_to) out->add_delivered_to(std::move(n));
      for (auto& n : r->read_by) out->add_read_by(std::move(n));
      send(reply);
      break;
    }
    case frame::kCreateGroup:
    case frame::kUpdateGroup: {
      // The events are handed to the members' devices in the store's completion, in commit
      // order with the group's messages.
      auto deliver = [&bus](store::completion<store::group_outcome> done) {
        return [&bus, done = std::move(done)](store::result<store::group_outcome> r) {
          if (r) {
            for (const auto& p : r->pushes)
              bus.deliver_message(p.recipients, std::make_shared<bus::envelope>(p.message));
          }
          done(std::move(r));
        };
      };
      auto r = co_await store_call<store::group_outcome>(
          [&](store::completion<store::group_outcome> done) {
            if (request.has_create_group()) {
              auto& c = *request.mutable_create_group();
              store::create_group_request req{user_,
                                              device_,
                                              username_,
                                              std::move(*c.mutable_name()),
                                              {c.members().begin(), c.members().end()},
                                              state_.cfg.limits.max_group_members,
                                              std::move(*c.mutable_client_request_id())};
              state_.store.create_group(std::move(req), deliver(std::move(done)));
              return;
            }
            auto& u = *request.mutable_update_group();
            store::group_change_request req{user_,
                                            device_,
                                            username_,
                                            u.chat_id(),
                                            static_cast<store::group_change>(u.change()),
                                            std::move(*u.mutable_user()),
                                            std::move(*u.mutable_name()),
                                            state_.cfg.limits.max_group_members};
            state_.store.change_group(std::move(req), deliver(std::move(done)));
          });
      if (!r) {
        if (r.error() == store::errc::unknown_user && request.has_create_group()) {
          send(co_await unknown_member_error(
              id, std::move(*request.mutable_create_group()->mutable_members())));
          break;
        }
        fail(r.error());
        break;
      }
      auto* out = reply.mutable_group_info();
      to_wire(r->info, *out);
      // The last event this account may ack: after its own LEAVE, the server's PROMOTE that
      // may follow is not its to ack.
      if (!r->pushes.empty()) {
        const bool left = request.has_update_group() &&
                          request.update_group().change() == v2::GROUP_CHANGE_LEAVE;
        out->set_seq((left ? r->pushes.front() : r->pushes.back()).message->seq);
      }
      if (r->duplicate) {
        out->set_duplicate(true);
        out->set_seq(r->created_seq);
      } else {
        // The events this device made are not pushed to it: it has seen them.
        for (const auto& p : r->pushes) {
          if (p.message->sender_device == device_) saw_own(p.message->chat, p.message->seq);
        }
      }
      // A member gone may have held the lowest watermark: the others' merged marks may rise.
      if (request.has_update_group() &&
          (request.update_group().change() == v2::GROUP_CHANGE_REMOVE ||
           request.update_group().change() == v2::GROUP_CHANGE_LEAVE)) {
        state_.groups.moved(std::vector<store::chat_id>(1, r->info.chat));
      }
      send(reply);
      break;
    }
    case frame::kGetGroup: {
      const std::uint64_t chat = request.get_group().chat_id();
      auto r = co_await store_call<store::group_info>([&](store::completion<store::group_info> done) {
        state_.store.get_group(user_, chat, std::move(done));
      });
      if (!r) {
        fail(r.error());
        break;
      }
      to_wire(*r, *reply.mutable_group_info());
      send(reply);
      break;
    }
    case frame::kRequestUpload: {
      // The record first (the quota is checked and the bytes counted there), then the URL: a
      // slot handed out always has a record, so the sweep finds whatever it leaves behind.
      const auto& u = request.request_upload();
      media::upload_grant grant;
      grant.id = media::new_blob_id();
      grant.owner = user_;
      grant.size = u.size();
      grant.sha256_hex = media::to_hex(u.sha256());
      grant.expires = media::wall_clock::now() + state_.cfg.media.upload_url_ttl;
      store::media_request req{user_, grant.id, grant.size, state_.cfg.media.quota_bytes};
      auto r = co_await store_call<std::uint64_t>([&](store::completion<std::uint64_t> done) {
        state_.store.create_media(std::move(req), std::move(done));
      });
      if (!r) {
        fail(r.error());
        break;
      }
      auto* out = reply.mutable_upload_slot();
      out->set_media_id(grant.id);
      out->set_url(state_.media.upload_url(grant));
      out->set_expires_at_ms(media::unix_ms(grant.expires));
      out->set_multipart_url(state_.media.multipart_start_url(grant));
      send(reply);
      break;
    }
    case frame::kRequestUploadParts: {
      // URLs for the parts of an upload this account started on its own slot, while the file
      // is not sent (after that the object is what its message names: no part may replace it).
      auto& q = *request.mutable_request_upload_parts();
      auto r = co_await store_call<store::media_record>(
          [&](store::completion<store::media_record> done) {
            state_.store.own_media(user_, q.media_id(), std::move(done));
          });
      if (!r) {
        fail(r.error());
        break;
      }
      // Refusals from what the store holds, not from the frame: not counted as bad frames
      // (reject), so that a client may ask as often as it pipelines requests.
      if (r->references > 0) {
        send(wire::make_error(id, v2::ERROR_CODE_INVALID_ARGUMENT, "the file was sent already"));
        break;
      }
      // Every URL given for a slot expires a whole URL lifetime before the sweep may take the
      // slot's record (at creation + retention): an upload finished later would leave an
      // object that no record names and no sweep finds (an S3 store has no orphan pass). A
      // slot past that is answered as swept: the client starts again with a new one.
      const auto now = media::wall_clock::now();
      const auto resume_until =
          media::wall_clock::time_point(std::chrono::milliseconds(r->created_ms)) +
          state_.cfg.media.unreferenced_retention - state_.cfg.media.upload_url_ttl;
      if (resume_until <= now) {
        send(wire::make_error(id, v2::ERROR_CODE_MEDIA_NOT_FOUND,
                              "the slot is too old to upload to: ask for a new one"));
        break;
      }
      media::upload_grant grant;
      grant.id = r->media;
      grant.owner = user_;
      grant.size = r->size;
      grant.expires = std::min(now + state_.cfg.media.upload_url_ttl, resume_until);
      auto urls = state_.media.multipart_part_urls(grant, q.upload_id());
      if (!urls) {
        send(wire::make_error(
            id, v2::ERROR_CODE_INVALID_ARGUMENT,
            "this server's blob store takes one PUT per file (resumed with HEAD): there are no "
            "multipart uploads"));
        break;
      }
      // One upload per slot: the first UploadId asked for is bound to the record (a write,
      // once), and parts are signed for it alone, so that the slot's start URL, usable until
      // it expires, cannot make several uploads hold parts; the sweep aborts the bound one.
      std::string bound = r->upload_id;
      if (bound.empty()) {
        auto b = co_await store_call<std::string>([&](store::completion<std::string> done) {
          state_.store.bind_upload(user_, q.media_id(), q.upload_id(), std::move(done));
        });
        if (!b) {
          fail(b.error());
          break;
        }
        bound = std::move(*b);
      }
      if (bound != q.upload_id()) {
        send(wire::make_error(id, v2::ERROR_CODE_MEDIA_NOT_FOUND,
                              "the slot's upload is another one (a second UploadId): ask for a "
                              "new slot"));
        break;
      }
      auto* out = reply.mutable_upload_parts();
      out->set_media_id(grant.id);
      out->set_part_size(urls->part_size);
      for (auto& u : urls->parts) out->add_part_urls(std::move(u));
      out->set_complete_url(std::move(urls->complete));
      out->set_expires_at_ms(media::unix_ms(grant.expires));
      send(reply);
      break;
    }
    case frame::kRequestDownload: {
      const auto& q = request.request_download();
      auto r = co_await store_call<store::media_record>(
          [&](store::completion<store::media_record> done) {
            state_.store.media_of(user_, q.chat_id(), q.seq(), std::move(done));
          });
      if (!r) {
        fail(r.error());
        break;
      }
      const auto expires = media::wall_clock::now() + state_.cfg.media.download_url_ttl;
      auto* out = reply.mutable_download_slot();
      out->set_media_id(r->media);
      out->set_url(state_.media.download_url(r->media, user_, expires));
      out->set_expires_at_ms(media::unix_ms(expires));
      out->set_size(r->size);
      send(reply);
      break;
    }
    case frame::kGetHistory: {
      struct promised {  // given back however the case ends (a throw included)
        device_session& s;
        ~promised() { s.release_answer_bytes(s.history_answer_bytes()); }
      } answer{*this};
      auto& h = *request.mutable_get_history();
      const std::size_t limit =
          h.limit() == 0 ? state_.cfg.limits.default_history_limit : h.limit();
      store::chat_ref chat{h.chat_id(), std::move(*h.mutable_peer())};
      auto r = co_await store_call<store::history_page>(
          [&](store::completion<store::history_page> done) {
            state_.store.history(user_, std::move(chat), h.before_seq(), limit,
                                 state_.cfg.limits.max_history_bytes, std::move(done));
          });
      if (!r) {
        fail(r.error());
        break;
      }
      auto* out = reply.mutable_history();
      out->set_chat_id(r->chat);
      for (const auto& e : r->messages) bus::to_wire(e, *out->add_messages());
      send(reply);
      break;
    }
    case frame::kUploadKeys: {
      auto& u = *request.mutable_upload_keys();
      if (u.has_signed_prekey() &&
          !e2ee::verify_signed_prekey(u.identity_key(), u.signed_prekey().public_key(),
                                      u.signed_prekey().signature())) {
        reject(id, v2::ERROR_CODE_BAD_SIGNATURE,
               "signed_prekey.signature is not the identity key's signature of its public key");
        break;
      }
      store::key_upload upload{
          device_, std::move(*u.mutable_identity_key()), u.registration_id(), std::nullopt, {}};
      if (u.has_signed_prekey()) {
        auto& spk = *u.mutable_signed_prekey();
        upload.signed_prekey = store::prekey{spk.id(), std::move(*spk.mutable_public_key()),
                                             std::move(*spk.mutable_signature())};
      }
      for (auto& k : *u.mutable_one_time_prekeys()) {
        upload.one_time_prekeys.push_back({k.id(), std::move(*k.mutable_public_key()), {}});
      }
      const std::size_t max_held = state_.cfg.limits.max_prekeys_held;
      auto r = co_await store_call<store::key_stock>([&](store::completion<store::key_stock> done) {
        state_.store.upload_keys(std::move(upload), max_held, std::move(done));
      });
      if (!r) {
        fail(r.error());
        break;
      }
      bad_frames_ = 0;
      reply.mutable_keys_stored()->set_one_time_prekeys(r->one_time_prekeys);
      reply.mutable_keys_stored()->set_identity_replaced(r->identity_replaced);
      send(reply);
      break;
    }
    case frame::kFetchKeys: {
      const std::string& owner = request.fetch_keys().username();
      // Past its pair's budget a fetch still gets the bundles, without one-time prekeys
      // (X3DH with the signed prekey alone): a client that needs a session always gets one,
      // and no account drains another's stock (security.md, "Draining one-time prekeys").
      const bool take_one_time =
          state_.limiters.one_time_prekey_per_pair.take(device_key() + ' ' + owner).count() == 0;
      auto r = co_await store_call<std::vector<store::key_bundle>>(
          [&](store::completion<std::vector<store::key_bundle>> done) {
            state_.store.take_key_bundles(owner, take_one_time, std::move(done));
          });
      if (!r) {
        fail(r.error());
        break;
      }
      auto* out = reply.mutable_key_bundles();
      std::optional<std::uint32_t> low;
      for (auto& b : *r) {
        auto* bundle = out->add_bundles();
        bundle->set_username(owner);
        bundle->set_device_id(b.device);
        bundle->set_registration_id(b.registration_id);
        bundle->set_identity_key(std::move(b.identity_key));
        auto* spk = bundle->mutable_signed_prekey();
        spk->set_id(b.signed_prekey.id);
        spk->set_public_key(std::move(b.signed_prekey.public_key));
        spk->set_signature(std::move(b.signed_prekey.signature));
        if (b.one_time_prekey) {
          bundle->mutable_one_time_prekey()->set_id(b.one_time_prekey->id);
          bundle->mutable_one_time_prekey()->set_public_key(
              std::move(b.one_time_prekey->public_key));
        }
        if (b.remaining < state_.cfg.limits.prekeys_low_watermark) low = b.remaining;
      }
      send(reply);
      if (low) {
        // The owner's online devices top up now; an offline one sees its stock when it
        // authenticates.
        frame notice;
        notice.mutable_prekeys_low()->set_remaining(*low);
        state_.bus.deliver_ephemeral(owner, wire::encode(notice));
      }
      break;
    }
    case frame::kSetPrivacy: {
      const bool hide = request.set_privacy().hide_last_seen();
      auto r = co_await store_call<void>([&](store::completion<void> done) {
        state_.store.set_privacy(user_, hide, std::move(done));
      });
      if (!r) {
        fail(r.error());
        break;
      }
      state_.presence.set_last_seen_hidden(username_, hide);
      reply.mutable_ok();
      send(reply);
      break;
    }
    case frame::kSubscribePresence:
      co_await on_subscribe(id, std::move(*request.mutable_subscribe_presence()));
      break;
    case frame::kTyping:
      co_await on_typing(id, std::move(*request.mutable_typing()));
      break;
    default:
      reject(id, v2::ERROR_CODE_UNSUPPORTED, "unsupported request");
      break;
  }
  --in_flight_;
}

// CreateGroup's UNKNOWN_USER names the member that has no account (Error.subject): the store's
// refusal says only that one has none, so it is asked which (one read, only on that error). If
// that read fails, the error goes out without a subject.
awaitable<v2::Frame> device_session::unknown_member_error(
    std::uint64_t request_id, google::protobuf::RepeatedPtrField<std::string> members) {
  auto f = store_error(request_id, store::errc::unknown_user, state_.stats);
  auto unknown = co_await store_call<std::string>([&](store::completion<std::string> done) {
    state_.store.first_unknown_user({members.begin(), members.end()}, std::move(done));
  });
  if (unknown && !unknown->empty()) {
    f.mutable_error()->set_message("unknown user '" + *unknown + "'");
    f.mutable_error()->set_subject(std::move(*unknown));
  }
  co_return f;
}

awaitable<std::vector<bool>> device_session::shares_chat_with(std::vector<std::string> names) {
  std::vector<bool> out(names.size(), false);
  std::vector<std::string> ask;
  std::vector<std::size_t> asked_at;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (std::find(contacts_.begin(), contacts_.end(), names[i]) != contacts_.end()) {
      out[i] = true;
    } else {
      ask.push_back(names[i]);
      asked_at.push_back(i);
    }
  }
  if (ask.empty()) co_return out;
  auto r = co_await store_call<std::vector<bool>>([&](store::completion<std::vector<bool>> done) {
    state_.store.shared_chats(user_, ask, std::move(done));
  });
  if (!r) co_return out;  // fail closed
  if (contacts_.size() + ask.size() > 1024) contacts_.clear();
  for (std::size_t j = 0; j < ask.size(); ++j) {
    if (!(*r)[j]) continue;
    out[asked_at[j]] = true;
    contacts_.push_back(std::move(ask[j]));
  }
  co_return out;
}

awaitable<void> device_session::on_subscribe(std::uint64_t request_id, v2::SubscribePresence s) {
  auto self = shared_from_this();
  std::vector<std::string> asked(s.usernames().begin(), s.usernames().end());
  // Each request replaces the subscription of the one before it, in the order received: one
  // that had to ask the store whom it may watch must not replace a later one that did not.
  const std::uint64_t mine = ++subscribe_requests_;
  // Presence is shown to contacts only: users this account shares no chat with are left out
  // silently (the answer is the same whether they exist or not).
  const auto shared = co_await shares_chat_with(asked);
  if (closed_) co_return;
  if (mine != subscribe_requests_) {  // replaced already by a later request: as if it had run
    frame reply;
    reply.set_request_id(request_id);
    reply.mutable_ok();
    send(reply);
    co_return;
  }
  std::vector<std::string> names;
  for (std::size_t i = 0; i < asked.size(); ++i) {
    if (shared[i]) names.push_back(std::move(asked[i]));
  }
  if (presence_subscription_) state_.presence.unsubscribe(*presence_subscription_);
  presence_subscription_.reset();
  std::weak_ptr<device_session> weak = shared_from_this();
  if (!names.empty()) {
    presence_subscription_ = state_.presence.subscribe(
        names, [weak](const std::string& username, const presence::state& st) {
          if (auto self = weak.lock())
            self->push_ephemeral(wire::encode(presence_frame(username, st)));
        });
  }
  frame reply;
  reply.set_request_id(request_id);
  reply.mutable_ok();
  if (!send(reply)) co_return;
  // The current states are ephemeral like the changes that follow (push_ephemeral): one that
  // does not fit the outgoing queue is dropped, not a reason to close a slow reader.
  for (const auto& name : names) {
    auto f = wire::encode(presence_frame(name, state_.presence.lookup(name)));
    if (closed_) co_return;
    if (has_room(f->size())) send_encoded(std::move(f));
  }
}

awaitable<void> device_session::on_typing(std::uint64_t request_id, v2::Typing t) {
  auto self = shared_from_this();
  std::vector<std::string> peer(1, t.peer());  // GCC 12: no braced list in a co_await
  const auto shared = co_await shares_chat_with(std::move(peer));
  if (closed_) co_return;
  if (!shared[0]) {
    send(wire::make_error(request_id, v2::ERROR_CODE_NO_SHARED_CHAT,
                          "typing indicators go only to users you share a chat with"));
    co_return;
  }
  frame event;
  event.mutable_typing_event()->set_from(username_);
  event.mutable_typing_event()->set_typing(t.typing());
  state_.bus.deliver_ephemeral(t.peer(), wire::encode(event));
  if (request_id != 0) {
    frame reply;
    reply.set_request_id(request_id);
    reply.mutable_ok();
    send(reply);
  }
}

}  // namespace parley::server
