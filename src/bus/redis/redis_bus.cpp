#include "bus/redis/redis_bus.hpp"

#include <boost/asio/steady_timer.hpp>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "parley/bus/v1/bus.pb.h"

namespace parley::bus {

namespace pb = parley::bus::v1;

namespace {

// Sets the key if it is missing or names this node (a device that moved to another node is
// that node's to refresh).
constexpr const char* refresh_script =
    "local v = redis.call('GET', KEYS[1]) "
    "if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "return 1 end return 0";
// Deletes the key only if it still names this node.
constexpr const char* detach_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

// The node a routing entry names; none for a missing entry (or one that is not a number).
std::optional<std::uint64_t> parse_node(const std::optional<redis::reply>& r) {
  if (!r || r->type != redis::reply::kind::string || r->str.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : r->str) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

void to_record(const store::chat_message& m, pb::LogEntry& e) {
  e.set_chat_id(m.chat);
  e.set_seq(m.seq);
  auto* s = e.mutable_message();
  s->set_message_id(m.id);
  s->set_sender_user(m.sender);
  s->set_sender_device(m.sender_device);
  s->set_sender_name(m.sender_name);
  s->set_sent_at_ms(m.sent_at_ms);
  s->set_payload(m.payload);
  s->set_cipher_type(m.cipher_type);
  if (!m.media.empty()) s->set_media_id(m.media);
  if (m.event) {
    auto* ev = s->mutable_event();
    ev->set_change(static_cast<std::uint32_t>(m.event->change));
    ev->set_user(m.event->user);
    ev->set_name(m.event->name);
    for (const auto& member : m.event->members) ev->add_members(member);
  }
}

store::shared_message from_record(const pb::LogEntry& e) {
  const auto& s = e.message();
  auto m = std::make_shared<store::chat_message>();
  m->chat = e.chat_id();
  m->seq = e.seq();
  m->id = s.message_id();
  m->sender = s.sender_user();
  m->sender_device = s.sender_device();
  m->sender_name = s.sender_name();
  m->sent_at_ms = s.sent_at_ms();
  m->payload = s.payload();
  m->cipher_type = s.cipher_type();
  m->media = s.media_id();
  if (s.has_event() && s.event().change() >= 1 && s.event().change() <= 7) {
    const auto& ev = s.event();
    m->event = std::make_shared<const store::group_event>(
        store::group_event{static_cast<store::group_change>(ev.change()), ev.user(), ev.name(),
                           {ev.members().begin(), ev.members().end()}});
  }
  return m;
}

void to_record(const store::watermark& w, pb::Watermark& out) {
  out.set_chat_id(w.chat);
  out.set_user(w.user);
  out.set_status(static_cast<std::uint32_t>(w.status));
  out.set_up_to(w.up_to);
  out.set_at_ms(w.at_ms);
  out.set_stamp(w.stamp);
}

store::watermark from_record(const pb::Watermark& w) {
  const auto status = w.status() >= 1 && w.status() <= 3
                          ? static_cast<store::message_status>(w.status())
                          : store::message_status::delivered;
  return {w.chat_id(), w.user(), status, w.up_to(), w.at_ms(), w.stamp()};
}

}  // namespace

std::string device_key(device_id device) {
  return "parley:conn:{d" + std::to_string(device) + "}";
}

std::string node_channel(std::uint64_t node) {
  return "parley:node:{" + std::to_string(node) + "}";
}

// What the Redis thread's timer and the reconnection logic share.
struct redis_bus::state {
  explicit state(const boost::asio::any_io_executor& ex) : timer(ex) {}
  boost::asio::steady_timer timer;
  // Redis thread. True before the first connection too: devices that attached before Redis
  // was ever reachable may have missed pushes as much as after a loss.
  bool was_down = true;
  bool stopped = false;   // Redis thread
};

redis_bus::redis_bus(std::shared_ptr<redis::client> client, redis_bus_options options)
    : client_(std::move(client)),
      options_(options),
      state_(std::make_shared<state>(client_->executor())) {
  // Each time the node channel's subscription is in place (the first time too: a device
  // attached before it may have been sent pushes that went nowhere), the devices read again.
  client_->subscribe(
      node_channel(options_.node_id), [this](std::string_view p) { on_message(p); },
      [this] { resync_all("the node channel's subscription was made"); });
  client_->subscribe(
      all_channel, [this](std::string_view p) { on_message(p); }, [] {});
  client_->on_state([this](bool up) {
    if (!up) {
      state_->was_down = true;
      // Pushes from other nodes are lost until Redis is back (and pushes to them): the
      // connections here must not take a local push for the next message of a chat.
      for (auto& ep : devices_.all()) ep->pushes_may_be_lost();
      return;
    }
    state_->was_down = false;
    refresh();  // registers what is connected already
    resync_all("Redis is reachable");
  });
}

redis_bus::~redis_bus() { stop(); }

void redis_bus::set_presence(
    presence_handler on_presence, std::function<void()> publish_full_presence,
    std::function<void(std::chrono::steady_clock::time_point)> on_refresh) {
  on_presence_ = std::move(on_presence);
  publish_full_presence_ = std::move(publish_full_presence);
  on_refresh_ = std::move(on_refresh);
}

void redis_bus::start() {
  client_->post([this] { arm_refresh(); });
}

// Redis thread: the next refresh in ttl / 3.
void redis_bus::arm_refresh() {
  if (state_->stopped) return;
  state_->timer.expires_after(std::chrono::duration_cast<std::chrono::milliseconds>(options_.ttl) /
                              3);
  state_->timer.async_wait([this](boost::system::error_code ec) {
    if (ec || state_->stopped) return;
    refresh();
    arm_refresh();
  });
}

void redis_bus::stop() {
  // Before the client stops: a pending timer would keep its thread from finishing.
  client_->post([s = state_] {
    s->stopped = true;
    s->timer.cancel();
  });
  client_->stop();  // joins its threads: no handler runs into an endpoint after it
}

void redis_bus::attach(device_id device, const std::string& username,
                       std::shared_ptr<endpoint> ep) {
  const std::uint64_t now = now_ms();
  // Without Redis, pushes from other nodes go nowhere until it is back (on_state then resyncs
  // every device): this one must not take a local push for the next of a chat meanwhile.
  if (!client_->connected()) ep->pushes_may_be_lost();
  const std::string key = device_key(device);
  const std::string me = std::to_string(options_.node_id);
  std::shared_ptr<endpoint> previous;
  // The registry's change and its Redis command in one order for every thread (attaching_
  // mutex; command() only posts), so that Redis sees a device's SET and a detach's DEL in
  // the order the registry made them: a detach of the old connection whose DEL went out
  // after the new one's SET would delete the new connection's key.
  std::unique_lock lock(attaching_mutex_);
  ++attaching_[device];  // before the registry has it: see refresh()
  previous = devices_.attach(device, username, std::move(ep), now);
  client_->command(key, {"SET", key, me, "EX", std::to_string(options_.ttl.count()), "GET"},
                   [this, device, now](std::optional<redis::reply> r) {
                     {
                       std::lock_guard lock(attaching_mutex_);
                       if (auto it = attaching_.find(device);
                           it != attaching_.end() && --it->second == 0)
                         attaching_.erase(it);
                     }
                     const auto was = parse_node(r);
                     if (!was || *was == options_.node_id) return;
                     // The device was connected to another node: that connection must go.
                     pb::NodeMessage m;
                     m.set_from_node(options_.node_id);
                     m.set_replaced_device(device);
                     m.set_replaced_at_ms(now);
                     publish_to(*was, m);
                   });
  lock.unlock();
  if (previous) previous->replaced();
}

void redis_bus::detach(device_id device, const endpoint* ep) {
  const std::string key = device_key(device);
  std::lock_guard lock(attaching_mutex_);  // see attach
  // A newer connection of the device here keeps it, and its routing key with it.
  if (!devices_.detach(device, ep)) return;
  client_->command(key, {"EVAL", detach_script, "1", key, std::to_string(options_.node_id)});
}

std::size_t redis_bus::connected_devices() const { return devices_.size(); }

void redis_bus::lookup(
    std::vector<device_id> devices,
    std::function<void(std::vector<std::pair<device_id, std::optional<std::uint64_t>>>)> done) {
  struct gather {
    std::vector<std::pair<device_id, std::optional<std::uint64_t>>> found;
    std::size_t waiting = 0;
    std::function<void(std::vector<std::pair<device_id, std::optional<std::uint64_t>>>)> done;
  };
  auto g = std::make_shared<gather>();
  g->found.reserve(devices.size());
  for (auto d : devices) g->found.emplace_back(d, std::nullopt);
  g->waiting = devices.size();
  g->done = std::move(done);
  // Issued back to back: hiredis pipelines them; the replies come in one burst per node.
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const std::string key = device_key(devices[i]);
    client_->command(key, {"GET", key}, [g, i](std::optional<redis::reply> r) {
      g->found[i].second = parse_node(r);
      if (--g->waiting == 0) g->done(std::move(g->found));
    });
  }
}

void redis_bus::publish_to(std::uint64_t node, const pb::NodeMessage& m) {
  client_->publish(node_channel(node), m.SerializeAsString());
}

void redis_bus::deliver_message(const std::vector<device_id>& devices, shared_envelope e) {
  std::vector<device_id> remote;
  for (auto& ep : devices_.find_each(devices, &remote)) ep->push_message(e);
  if (remote.empty() || !client_->connected()) return;
  lookup(std::move(remote), [this, e = std::move(e)](auto found) {
    std::unordered_map<std::uint64_t, pb::NodeMessage> by_node;
    for (const auto& [device, node] : found) {
      if (!node || *node == options_.node_id) continue;
      by_node[*node].add_devices(device);
    }
    if (by_node.empty()) return;
    // The entry is serialized once and copied into each node's message.
    pb::LogEntry entry;
    to_record(e->message(), entry);
    for (auto& [node, m] : by_node) {
      m.set_from_node(options_.node_id);
      *m.mutable_entry() = entry;
      publish_to(node, m);
    }
  });
}

void redis_bus::deliver_receipts(const std::vector<store::receipt_delivery>& receipts) {
  // One push per device, carrying every watermark bound there, in the order given.
  auto by_device = receipts_by_device(receipts);
  auto remote = std::make_shared<std::vector<std::pair<device_id, std::vector<store::watermark>>>>();
  for (auto& [device, marks] : by_device) {
    if (auto ep = devices_.find(device)) {
      ep->push_receipts(std::move(marks));
    } else {
      remote->emplace_back(device, std::move(marks));
    }
  }
  if (remote->empty() || !client_->connected()) return;
  std::vector<device_id> ids;
  ids.reserve(remote->size());
  for (const auto& [device, _] : *remote) ids.push_back(device);
  lookup(std::move(ids), [this, remote](auto found) {
    std::unordered_map<std::uint64_t, pb::NodeMessage> by_node;
    for (std::size_t i = 0; i < found.size(); ++i) {
      const auto& node = found[i].second;
      if (!node || *node == options_.node_id) continue;
      auto* r = by_node[*node].add_receipts();
      r->set_device(found[i].first);
      for (const auto& w : (*remote)[i].second) to_record(w, *r->add_marks());
    }
    for (auto& [node, m] : by_node) {
      m.set_from_node(options_.node_id);
      publish_to(node, m);
    }
  });
}

void redis_bus::deliver_ephemeral(const std::string& username, wire::encoded_frame frame) {
  for (auto& ep : devices_.of_user(username)) ep->push_ephemeral(frame);
  if (!client_->connected()) return;
  // The user may have devices on other nodes too: every node gets it and keeps its share.
  pb::NodeMessage m;
  m.set_from_node(options_.node_id);
  m.set_ephemeral_user(username);
  m.set_ephemeral_frame(*frame);
  client_->publish(all_channel, m.SerializeAsString());
}

void redis_bus::publish_presence(std::vector<pb::PresenceState> states, bool full) {
  if ((states.empty() && !full) || !client_->connected()) return;
  pb::NodeMessage m;
  m.set_from_node(options_.node_id);
  m.set_full_presence(full);
  for (auto& s : states) *m.add_presence() = std::move(s);
  client_->publish(all_channel, m.SerializeAsString());
}

void redis_bus::on_message(std::string_view payload) {
  pb::NodeMessage m;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    log_warn() << "bus: a message on Redis that is no NodeMessage (" << payload.size()
               << " bytes), ignored";
    return;
  }
  if (m.from_node() == options_.node_id) return;  // our own, on "parley:all"
  if (m.has_entry() && m.devices_size() > 0) {
    auto e = std::make_shared<const envelope>(from_record(m.entry()));
    for (auto device : m.devices()) {
      if (auto ep = devices_.find(device)) ep->push_message(e);
    }
  }
  for (const auto& r : m.receipts()) {
    auto ep = devices_.find(r.device());
    if (!ep) continue;
    std::vector<store::watermark> marks;
    marks.reserve(static_cast<std::size_t>(r.marks_size()));
    for (const auto& w : r.marks()) marks.push_back(from_record(w));
    ep->push_receipts(std::move(marks));
  }
  if (m.replaced_device() != 0) {
    // A connection made here after the other node's is the newer one: it stays.
    if (auto old = devices_.find_attached_by(m.replaced_device(), m.replaced_at_ms()))
      old->replaced();
  }
  if (!m.ephemeral_user().empty()) {
    auto frame = std::make_shared<const std::string>(m.ephemeral_frame());
    for (auto& ep : devices_.of_user(m.ephemeral_user())) ep->push_ephemeral(frame);
  }
  if ((m.presence_size() > 0 || m.full_presence()) && on_presence_) {
    on_presence_(m.from_node(), m.full_presence(), {m.presence().begin(), m.presence().end()});
  }
}

void redis_bus::refresh() {
  const auto ids = devices_.ids();
  const std::string me = std::to_string(options_.node_id);
  const std::string ttl = std::to_string(options_.ttl.count());
  for (auto d : ids) {
    const std::string key = device_key(d);
    client_->command(key, {"EVAL", refresh_script, "1", key, me, ttl},
                     [this, d](std::optional<redis::reply> r) {
                       // 0: the key names another node. The device authenticated there after
                       // it did here, and that node's replaced_device message did not arrive
                       // (best-effort): the connection here is the stale one. Unless an
                       // attach here is still on its way to Redis, which this refresh may
                       // have overtaken.
                       if (!r || r->type != redis::reply::kind::integer || r->integer != 0) return;
                       {
                         std::lock_guard lock(attaching_mutex_);
                         if (attaching_.contains(d)) return;
                       }
                       if (auto ep = devices_.find(d)) {
                         log_info() << "bus: device " << d
                                    << " is routed to another node: closing its connection here";
                         ep->replaced();
                       }
                     });
  }
  if (on_refresh_) on_refresh_(std::chrono::steady_clock::now());
  if (publish_full_presence_ && client_->connected()) publish_full_presence_();
}

void redis_bus::resync_all(const char* why) {
  auto endpoints = devices_.all();
  if (endpoints.empty()) return;
  log_warn() << "bus: " << why << ": " << endpoints.size()
             << " connected devices read the log again (pushes may have been lost)";
  for (auto& ep : endpoints) ep->resync();
}

}  // namespace parley::bus
