#include "redis/redis_client.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <chrono>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "common/log.hpp"
#include "common/thread_name.hpp"

namespace parley::redis {

namespace asio = boost::asio;

// --- URLs and slots ------------------------------------------------------------------------

namespace {

// %XX escapes of a URL's user information; throws on a bad one.
std::string percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size() ||
        std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3)
      throw std::invalid_argument("a bad %-escape in a Redis URL's credentials");
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

}  // namespace

url parse_url(const std::string& text) {
  constexpr std::string_view scheme = "redis://";
  if (text.rfind(scheme, 0) != 0)
    throw std::invalid_argument("a Redis URL starts with redis://");  // (not quoted: credentials)
  std::string rest = text.substr(scheme.size());
  url out;
  // The credentials first, so that no message below repeats them: USER:PASSWORD@.
  std::string shown = text;  // what error messages quote
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    const std::string userinfo = rest.substr(0, at);
    rest.erase(0, at + 1);
    shown = std::string(scheme) + "***@" + rest;
    const auto colon = userinfo.find(':');
    if (colon == std::string::npos)
      throw std::invalid_argument("a Redis URL's credentials are [USER]:PASSWORD@, in '" + shown +
                                  "'");
    out.auth.username = percent_decoded(std::string_view(userinfo).substr(0, colon));
    out.auth.password = percent_decoded(std::string_view(userinfo).substr(colon + 1));
    if (out.auth.password.empty())
      throw std::invalid_argument("an empty password in Redis URL '" + shown + "'");
  }
  if (auto q = rest.find('?'); q != std::string::npos) {
    const std::string query = rest.substr(q + 1);
    rest.resize(q);
    if (query == "cluster=1" || query == "cluster=true") {
      out.cluster = true;
    } else if (!query.empty() && query != "cluster=0" && query != "cluster=false") {
      throw std::invalid_argument("unknown Redis URL option '" + query +
                                  "' (only cluster=1 is known)");
    }
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos)
    throw std::invalid_argument(
        "a Redis URL here is redis://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][?cluster=1], "
        "got '" +
        shown + "'");
  auto parse_host = [&](const std::string& text) {
    address a;
    const auto colon = text.rfind(':');
    a.host = colon == std::string::npos ? text : text.substr(0, colon);
    if (colon != std::string::npos) {
      const std::string port = text.substr(colon + 1);
      unsigned p = 0;
      const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
      if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || p == 0 ||
          p > 65535)
        throw std::invalid_argument("bad port in Redis URL '" + shown + "'");
      a.port = static_cast<std::uint16_t>(p);
    }
    if (a.host.empty()) throw std::invalid_argument("no host in Redis URL '" + shown + "'");
    return a;
  };
  for (std::size_t begin = 0;;) {
    const auto comma = rest.find(',', begin);
    const auto a = parse_host(rest.substr(begin, comma - begin));
    if (begin == 0) {
      out.seed = a;
    } else {
      out.more_seeds.push_back(a);
    }
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  if (!out.more_seeds.empty() && !out.cluster)
    throw std::invalid_argument("more than one host in Redis URL '" + shown +
                                "' without ?cluster=1 (one Redis has one address)");
  return out;
}

namespace {

std::uint16_t crc16(std::string_view s) {
  std::uint16_t crc = 0;
  for (unsigned char b : s) {
    crc ^= static_cast<std::uint16_t>(b << 8);
    for (int i = 0; i < 8; ++i)
      crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<std::uint16_t>(crc << 1);
  }
  return crc;
}

// Recursive over nested arrays: Redis is trusted infrastructure, and the replies used here
// nest at most three deep (CLUSTER SLOTS).
reply convert(const redisReply* r) {  // NOLINT(misc-no-recursion)
  reply out;
  switch (r->type) {
    case REDIS_REPLY_STATUS:
      out.type = reply::kind::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = reply::kind::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = reply::kind::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = reply::kind::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = reply::kind::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = reply::kind::nil;
  }
  return out;
}

// "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> slot, address.
bool parse_redirect(const std::string& error, std::string_view word, std::uint16_t& slot,
                    address& to) {
  if (error.rfind(word, 0) != 0) return false;
  const auto a = error.find(' ');
  const auto b = error.find(' ', a + 1);
  if (a == std::string::npos || b == std::string::npos) return false;
  const std::string target = error.substr(b + 1);
  const auto colon = target.rfind(':');
  if (colon == std::string::npos) return false;
  unsigned s = 0, p = 0;
  std::from_chars(error.data() + a + 1, error.data() + b, s);
  std::from_chars(target.data() + colon + 1, target.data() + target.size(), p);
  if (s >= 16384 || p == 0 || p > 65535) return false;
  slot = static_cast<std::uint16_t>(s);
  to.host = target.substr(0, colon);
  if (to.host.empty()) return false;
  to.port = static_cast<std::uint16_t>(p);
  return true;
}

// "HOST:PORT" (as address::text() writes it) -> address.
address parse_address(const std::string& text) {
  const auto colon = text.rfind(':');
  unsigned p = 0;
  std::from_chars(text.data() + colon + 1, text.data() + text.size(), p);
  return {text.substr(0, colon), static_cast<std::uint16_t>(p)};
}

}  // namespace

std::uint16_t key_slot(std::string_view key) {
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) % 16384;
}

// --- the client ----------------------------------------------------------------------------

struct client::impl : std::enable_shared_from_this<client::impl> {
  explicit impl(client_options o) : options(std::move(o)), work(io.get_executor()) {}

  client_options options;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<bool> stopping{false};
  // Some node's command connection is up (one Redis: the seed's). I/O thread writes.
  std::atomic<bool> any_up{false};
  std::size_t nodes_up = 0;  // I/O thread
  std::function<void(bool)> state_listener;

  // One asynchronous connection to one Redis node (I/O thread only).
  struct node : std::enable_shared_from_this<node> {
    node(impl& o, address a) : owner(o), addr(std::move(a)), fd(o.io), retry(o.io) {}
    impl& owner;
    address addr;
    redisAsyncContext* ac = nullptr;
    asio::posix::stream_descriptor fd;
    asio::steady_timer retry;
    // When each command awaiting its reply on `ac` was sent, oldest first (Redis answers a
    // connection's commands in order), and when `ac` last heard or sent anything.
    std::deque<std::chrono::steady_clock::time_point> sent;
    std::chrono::steady_clock::time_point active{};
    // Bumped when `ac` goes: a descriptor wait of an older context, run late, changes nothing.
    std::uint64_t generation = 0;
    bool up = false;
    bool retry_pending = false;
    bool auth_refusal_logged = false;  // once until the next accepted AUTH, not every retry
    bool overflow_logged = false;      // once per run of commands refused at max_pending
    // Failed connects since the last one logged: the first is logged, then one line every
    // 30 s with the count (a retry every 500 ms would be two lines a second).
    std::uint64_t connect_failures = 0;
    std::chrono::steady_clock::time_point connect_failure_logged{};
    bool want_read = false, want_write = false, reading = false, writing = false;

    void connect();
    void accepted();  // connected (and AUTH accepted, with credentials): up
    void schedule_retry();
    void wait_read();
    void wait_write();
    void send(const std::vector<std::string>& args, reply_handler done);
    void issue(const std::vector<std::string>& args, reply_handler done);  // ac set: queued
    void close();
    void watch(std::chrono::steady_clock::time_point now);  // the timeout, see watchdog
  };
  std::unordered_map<std::string, std::shared_ptr<node>> nodes;  // by address text
  // Every node's timeout checked a few times per `options.timeout` (I/O thread).
  asio::steady_timer watchdog{io};
  void arm_watchdog() {
    watchdog.expires_after(std::max(options.timeout / 4, std::chrono::milliseconds(10)));
    watchdog.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping.load()) return;
      const auto now = std::chrono::steady_clock::now();
      for (auto& [_, n] : nodes) n->watch(now);
      arm_watchdog();
    });
  }
  std::shared_ptr<node> seed;
  // The cluster's slot map: the address of each slot's master ("" unknown: the seed). The
  // I/O thread writes it (under the mutex) and reads it; the subscriptions' threads read it
  // under the mutex.
  std::mutex slots_mutex;
  std::vector<std::string> slot_owner = std::vector<std::string>(16384);
  void set_owner(std::size_t slot, std::string owner) {
    std::lock_guard lock(slots_mutex);
    slot_owner[slot] = std::move(owner);
  }
  // Where a subscription's thread goes for `slot`: its master as last known, else the seed.
  address owner_of(std::uint16_t slot) {
    std::string text;
    {
      std::lock_guard lock(slots_mutex);
      text = slot_owner[slot];
    }
    if (!options.cluster || text.empty()) return options.seed;
    return parse_address(text);
  }
  std::chrono::steady_clock::time_point last_refresh{};

  // Subscriptions (a thread each).
  struct subscription {
    std::string channel;
    message_handler on_message;
    std::function<void()> on_subscribed;
    std::thread thread;
  };
  std::vector<std::unique_ptr<subscription>> subscriptions;
  int stop_fd = -1;

  std::shared_ptr<node> node_for(const address& a) {
    auto& n = nodes[a.text()];
    if (!n) {
      n = std::make_shared<node>(*this, a);
      n->connect();
    }
    return n;
  }
  std::shared_ptr<node> node_for_slot(std::uint16_t slot) {
    if (!options.cluster || slot_owner[slot].empty()) return seed;
    auto it = nodes.find(slot_owner[slot]);
    if (it != nodes.end()) return it->second;
    return node_for(parse_address(slot_owner[slot]));
  }

  // Sends on the node of `slot`, following MOVED and ASK (at most 5 redirections).
  void routed(std::uint16_t slot, std::vector<std::string> args, reply_handler done,
              int redirects, std::shared_ptr<node> target = nullptr, bool asking = false) {
    if (!target) target = node_for_slot(slot);
    if (asking) target->send({"ASKING"}, {});
    auto self = shared_from_this();
    auto args_copy = options.cluster ? args : std::vector<std::string>{};
    target->send(args, [self, slot, args = std::move(args_copy), done = std::move(done),
                        redirects](std::optional<reply> r) mutable {
      if (r && r->is_error() && self->options.cluster && redirects < 5) {
        std::uint16_t s = 0;
        address to;
        if (parse_redirect(r->str, "MOVED ", s, to)) {
          self->set_owner(s, to.text());
          self->refresh_slots();
          self->routed(slot, std::move(args), std::move(done), redirects + 1);
          return;
        }
        if (parse_redirect(r->str, "ASK ", s, to)) {
          self->routed(slot, std::move(args), std::move(done), redirects + 1, self->node_for(to),
                       true);
          return;
        }
      }
      // No answer: the slot's master may be gone, and a replica may have taken over without
      // anyone saying MOVED. The map is read again (at most once a second).
      if (!r && self->options.cluster) self->refresh_slots();
      if (done) done(std::move(r));
    });
  }

  // Reads the slot map (CLUSTER SLOTS) from the seed, or with the seed down from a node that
  // is up, at most once a second.
  void refresh_slots() {
    if (!options.cluster || !seed) return;
    std::shared_ptr<node> source = seed;
    if (!seed->up) {
      for (auto& [_, n] : nodes)
        if (n->up) source = n;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refresh < std::chrono::seconds(1)) return;
    last_refresh = now;
    auto self = shared_from_this();
    source->send({"CLUSTER", "SLOTS"}, [self](std::optional<reply> r) {
      if (!r || r->type != reply::kind::array) return;
      for (const auto& range : r->elements) {
        if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
        const auto& master = range.elements[2];
        address a{master.elements[0].str, static_cast<std::uint16_t>(master.elements[1].integer)};
        if (a.host.empty()) a.host = self->options.seed.host;
        const auto from = range.elements[0].integer;
        const auto to = range.elements[1].integer;
        std::lock_guard lock(self->slots_mutex);
        for (auto s = from; s <= to && s < 16384; ++s)
          self->slot_owner[static_cast<std::size_t>(s)] = a.text();
      }
    });
  }

  // A node's connection came up (answered) or went. Redis counts as up while any node is
  // (one Redis: the seed): state_listener hears the changes of that. In a cluster, either
  // change may come with a new slot map (a node back, or a master gone whose replica takes
  // over): it is read again.
  void node_state(node& n, bool up) {
    (void)n;
    nodes_up = up ? nodes_up + 1 : nodes_up - 1;
    refresh_slots();
    const bool now_up = nodes_up > 0;
    if (now_up == any_up.load()) return;
    any_up.store(now_up);
    if (state_listener) state_listener(now_up);
  }

  void run_subscription(subscription& s);
};

namespace {

client::impl::node* node_of(const redisAsyncContext* ac) {
  return static_cast<client::impl::node*>(ac->data);
}

}  // namespace

void client::impl::node::connect() {
  if (ac != nullptr || owner.stopping.load()) return;
  active = std::chrono::steady_clock::now();
  ac = redisAsyncConnect(addr.host.c_str(), addr.port);
  if (ac == nullptr || ac->err) {
    if (ac != nullptr) redisAsyncFree(ac);
    ac = nullptr;
    schedule_retry();
    return;
  }
  ac->data = this;
  boost::system::error_code ec;
  fd.assign(ac->c.fd, ec);
  ac->ev.data = this;
  ac->ev.addRead = [](void* p) {
    auto* n = static_cast<node*>(p);
    n->want_read = true;
    if (!n->reading) n->wait_read();
  };
  ac->ev.delRead = [](void* p) { static_cast<node*>(p)->want_read = false; };
  ac->ev.addWrite = [](void* p) {
    auto* n = static_cast<node*>(p);
    n->want_write = true;
    if (!n->writing) n->wait_write();
  };
  ac->ev.delWrite = [](void* p) { static_cast<node*>(p)->want_write = false; };
  ac->ev.cleanup = [](void* p) {
    // hiredis frees the context (and closes the socket) after this: drop our view of it.
    auto* n = static_cast<node*>(p);
    n->want_read = n->want_write = false;
    n->reading = n->writing = false;  // the cancelled waits below are the old context's
    ++n->generation;
    n->sent.clear();
    boost::system::error_code ignored;
    n->fd.cancel(ignored);
    n->fd.release();
    n->ac = nullptr;
  };
  redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* c, int status) {
    auto* n = node_of(c);
    if (status != REDIS_OK) {
      ++n->connect_failures;
      const auto now = std::chrono::steady_clock::now();
      if (n->connect_failures == 1 || now - n->connect_failure_logged >= std::chrono::seconds(30)) {
        log_warn() << "redis: cannot connect to " << n->addr.text() << ": "
                   << (c->errstr != nullptr ? c->errstr : "unknown error")
                   << (n->connect_failures > 1
                           ? " (" + std::to_string(n->connect_failures) + " attempts so far)"
                           : std::string());
        n->connect_failure_logged = now;
      }
      n->schedule_retry();
      return;
    }
    // Up once Redis answers the PING or AUTH queued first (below): a connect that the
    // kernel completed for a process that does not run is not a Redis that answers.
  });
  // AUTH (or PING) before anything else on this connection: hiredis writes commands in the
  // order given, so whatever is sent before the answer comes queues behind it.
  const auto& auth = owner.options.auth;
  if (auth.password.empty()) {
    issue({"PING"}, [self = shared_from_this()](std::optional<reply> r) {
      if (r && !r->is_error()) self->accepted();
    });
  } else {
    std::vector<std::string> args{"AUTH"};
    if (!auth.username.empty()) args.push_back(auth.username);
    args.push_back(auth.password);
    issue(args, [self = shared_from_this()](std::optional<reply> r) {
      if (r && !r->is_error()) {
        self->accepted();
        return;
      }
      if (r && !self->auth_refusal_logged) {
        log_warn() << "redis: " << self->addr.text() << " refused AUTH (retried quietly): "
                   << r->str;
        self->auth_refusal_logged = true;
      }
      // The connection is dropped and tried again (a password being rotated may come right).
      if (self->ac != nullptr) redisAsyncDisconnect(self->ac);
    });
  }
  redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* c, int status) {
    auto* n = node_of(c);
    const bool was_up = n->up;
    n->up = false;
    if (n->owner.stopping.load()) return;
    if (was_up) {
      log_warn() << "redis: lost " << n->addr.text() << ": "
                 << (c->errstr != nullptr && status != REDIS_OK ? c->errstr : "closed");
      n->owner.node_state(*n, false);
    }
    n->schedule_retry();
  });
}

void client::impl::node::accepted() {
  up = true;
  auth_refusal_logged = false;
  connect_failures = 0;
  log_info() << "redis: connected to " << addr.text();
  owner.node_state(*this, true);
}

void client::impl::node::schedule_retry() {
  if (retry_pending || owner.stopping.load()) return;
  retry_pending = true;
  retry.expires_after(owner.options.reconnect_interval);
  retry.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->retry_pending = false;
    if (ec) return;
    self->connect();
  });
}

void client::impl::node::wait_read() {
  reading = true;
  fd.async_wait(asio::posix::descriptor_base::wait_read,
                [self = shared_from_this(), g = generation](boost::system::error_code ec) {
                  if (g != self->generation) return;
                  self->reading = false;
                  if (ec || self->ac == nullptr || !self->want_read) return;
                  self->active = std::chrono::steady_clock::now();
                  redisAsyncHandleRead(self->ac);  // may free the context (cleanup above)
                  if (self->ac != nullptr && self->want_read && !self->reading) self->wait_read();
                });
}

void client::impl::node::wait_write() {
  writing = true;
  fd.async_wait(asio::posix::descriptor_base::wait_write,
                [self = shared_from_this(), g = generation](boost::system::error_code ec) {
                  if (g != self->generation) return;
                  self->writing = false;
                  if (ec || self->ac == nullptr || !self->want_write) return;
                  redisAsyncHandleWrite(self->ac);
                  if (self->ac != nullptr && self->want_write && !self->writing)
                    self->wait_write();
                });
}

void client::impl::node::send(const std::vector<std::string>& args, reply_handler done) {
  if (ac == nullptr || sent.size() >= owner.options.max_pending) {
    if (ac != nullptr && !overflow_logged) {
      overflow_logged = true;
      log_warn() << "redis: " << addr.text() << " has " << sent.size()
                 << " commands awaiting replies: refusing more until it catches up";
    }
    connect();
    if (done) done(std::nullopt);
    return;
  }
  overflow_logged = false;
  issue(args, std::move(done));
}

// A command unanswered for `timeout` (the connect's PING or AUTH included): the connection is
// lost, whatever TCP thinks (a host gone without a reset keeps it "open" for many minutes).
// An idle connection that is up is PINGed, so that silence shows without a command.
void client::impl::node::watch(std::chrono::steady_clock::time_point now) {
  if (ac == nullptr) return;
  const auto timeout = owner.options.timeout;
  if (!sent.empty() && now - sent.front() > timeout) {
    log_warn() << "redis: " << addr.text() << " did not answer within " << timeout.count()
               << " ms: " << (up ? "closing the connection" : "connecting again");
    redisAsyncFree(ac);  // pending handlers get nullopt; if it was up, the disconnect callback
    schedule_retry();    // marks it down (both schedule one retry)
    return;
  }
  if (up && sent.empty() && now - active > timeout / 3) issue({"PING"}, {});
}

void client::impl::node::issue(const std::vector<std::string>& args, reply_handler done) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* handler = new reply_handler(std::move(done));
  sent.push_back(std::chrono::steady_clock::now());
  active = sent.back();
  const int rc = redisAsyncCommandArgv(
      ac,
      [](redisAsyncContext* c, void* r, void* privdata) {
        std::unique_ptr<reply_handler> h(static_cast<reply_handler*>(privdata));
        if (auto* n = node_of(c); !n->sent.empty()) n->sent.pop_front();
        if (!*h) return;
        if (r == nullptr) {
          (*h)(std::nullopt);
        } else {
          (*h)(convert(static_cast<redisReply*>(r)));
        }
      },
      handler, static_cast<int>(argv.size()), argv.data(), lengths.data());
  if (rc != REDIS_OK) {
    sent.pop_back();
    std::unique_ptr<reply_handler> h(handler);
    if (*h) (*h)(std::nullopt);
  }
}

void client::impl::node::close() {
  retry.cancel();
  // At once, not after pending replies (a Redis that is down would never send them): pending
  // handlers get nullopt, and the cleanup hook cancels the descriptor's waits.
  if (ac != nullptr) redisAsyncFree(ac);
}

// A subscription's thread: connect, (S)SUBSCRIBE (following MOVED to the channel's master in a
// cluster), then read pushes until the connection drops or the client stops.
void client::impl::run_subscription(subscription& s) {
  address target = options.seed;
  bool auth_refusal_logged = false;
  auto pause = [&] {
    pollfd p{stop_fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(options.reconnect_interval.count()));
  };
  const char* verb = options.cluster ? "SSUBSCRIBE" : "SUBSCRIBE";
  const std::uint16_t slot = options.cluster ? key_slot(s.channel) : 0;
  // Where to go after a failure: the channel's master as the map has it now, and the map is
  // read again (a master that failed over answers no MOVED: its replica does not know us).
  auto retarget = [&] {
    if (options.cluster) asio::post(io, [self = shared_from_this()] { self->refresh_slots(); });
    target = owner_of(slot);
  };
  int redirects = 0;  // MOVED answers in a row
  const auto limit = options.timeout;
  const timeval timeout{static_cast<time_t>(limit.count() / 1000),
                        static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  while (!stopping.load()) {
    redisContext* c = redisConnectWithTimeout(target.host.c_str(), target.port, timeout);
    // The blocking calls below (AUTH, the subscribe, a PING's write) wait at most `timeout`
    // too: a Redis that accepted the connection need not answer.
    if (c == nullptr || c->err || redisSetTimeout(c, timeout) != REDIS_OK) {
      if (c != nullptr) redisFree(c);
      pause();
      retarget();
      continue;
    }
    if (!options.auth.password.empty()) {
      const auto& a = options.auth;
      auto* answer = static_cast<redisReply*>(
          a.username.empty()
              ? redisCommand(c, "AUTH %b", a.password.data(), a.password.size())
              : redisCommand(c, "AUTH %b %b", a.username.data(), a.username.size(),
                             a.password.data(), a.password.size()));
      const bool accepted = answer != nullptr && answer->type != REDIS_REPLY_ERROR;
      if (answer != nullptr && !accepted && !auth_refusal_logged) {
        log_warn() << "redis: " << target.text() << " refused AUTH (retried quietly): "
                   << std::string(answer->str, answer->len);
        auth_refusal_logged = true;
      }
      if (accepted) auth_refusal_logged = false;
      if (answer != nullptr) freeReplyObject(answer);
      if (!accepted) {
        redisFree(c);
        pause();
        retarget();
        continue;
      }
    }
    auto* first = static_cast<redisReply*>(
        redisCommand(c, "%s %b", verb, s.channel.data(), s.channel.size()));
    if (first == nullptr) {
      redisFree(c);
      pause();
      retarget();
      continue;
    }
    const reply confirmation = convert(first);
    freeReplyObject(first);
    if (confirmation.is_error()) {
      std::uint16_t moved_slot = 0;
      address to;
      // Followed at once, but not for ever: nodes that disagree during a failover could send
      // the thread round without a pause.
      if (parse_redirect(confirmation.str, "MOVED ", moved_slot, to) && ++redirects <= 5) {
        target = to;  // the channel's master
      } else if (redirects > 5) {
        log_warn() << "redis: " << verb << " " << s.channel << ": redirected " << redirects - 1
                   << " times in a row, pausing";
        redirects = 0;
        pause();
        retarget();
      } else {
        log_warn() << "redis: " << verb << " " << s.channel << ": " << confirmation.str;
        pause();
        retarget();
      }
      redisFree(c);
      continue;
    }
    redirects = 0;
    if (s.on_subscribed) s.on_subscribed();
    bool lost = false;
    bool read_more = false;  // the reader may hold pushes that came with the confirmation
    // Silence is checked with PING (allowed while subscribed; its "pong" is ignored below):
    // one after a third of `timeout` heard nothing, and the subscription is lost when all of
    // it passed without a byte.
    auto heard = std::chrono::steady_clock::now();
    bool pinged = false;
    while (!stopping.load() && !lost) {
      if (read_more) {
        pollfd fds[2] = {{c->fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
        const int ready =
            ::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(limit.count() / 6, 1)));
        if (ready < 0) continue;
        if ((fds[1].revents & POLLIN) != 0) break;
        const auto now = std::chrono::steady_clock::now();
        if (ready == 0) {
          if (now - heard >= limit) {
            log_warn() << "redis: " << target.text() << " silent for " << limit.count()
                       << " ms on the subscription to " << s.channel;
            lost = true;
          } else if (!pinged && now - heard >= limit / 3) {
            pinged = true;
            lost = redisAppendCommand(c, "PING") != REDIS_OK;
            int written = 0;
            while (!lost && written == 0) lost = redisBufferWrite(c, &written) != REDIS_OK;
          }
          continue;
        }
        if (redisBufferRead(c) != REDIS_OK) {
          lost = true;
          break;
        }
        heard = now;
        pinged = false;
      }
      read_more = true;
      void* raw = nullptr;
      while (redisGetReplyFromReader(c, &raw) == REDIS_OK && raw != nullptr) {
        const reply r = convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        raw = nullptr;
        if (r.type != reply::kind::array || r.elements.empty()) continue;
        const std::string& kind = r.elements[0].str;
        if ((kind == "message" || kind == "smessage") && r.elements.size() >= 3) {
          s.on_message(r.elements[2].str);
        } else if (kind == "sunsubscribe" || kind == "unsubscribe") {
          lost = true;  // the slot moved: subscribe again where it is now (MOVED tells)
        }
      }
    }
    redisFree(c);
    if (lost && !stopping.load()) {
      log_warn() << "redis: subscription to " << s.channel << " lost, subscribing again";
      pause();
      retarget();
    }
  }
}

client::client(client_options options) : impl_(std::make_shared<impl>(std::move(options))) {}

client::~client() { stop(); }

void client::start() {
  auto& d = *impl_;
  d.stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (d.stop_fd < 0) throw std::runtime_error("redis: eventfd failed");
  asio::post(d.io, [&d] {
    d.seed = std::make_shared<impl::node>(d, d.options.seed);
    d.nodes[d.options.seed.text()] = d.seed;
    d.seed->connect();
    if (d.options.cluster) {
      for (const auto& a : d.options.more_seeds) d.node_for(a);  // connects
    }
    d.arm_watchdog();
  });
  d.thread = std::thread([&d] { d.io.run(); });
  name_thread(d.thread, "redis-io");
  for (auto& s : d.subscriptions) {
    s->thread = std::thread([&d, sub = s.get()] { d.run_subscription(*sub); });
    name_thread(s->thread, "redis-sub");
  }
}

void client::stop() {
  auto& d = *impl_;
  if (d.stopping.exchange(true)) return;
  if (d.stop_fd >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(d.stop_fd, &one, sizeof one);
  }
  for (auto& s : d.subscriptions) {
    if (s->thread.joinable()) s->thread.join();
  }
  if (d.thread.joinable()) {
    asio::post(d.io, [&d] {
      d.watchdog.cancel();
      for (auto& [_, n] : d.nodes) n->close();
      d.work.reset();
    });
    d.thread.join();
  }
  d.nodes.clear();
  d.seed.reset();
  if (d.stop_fd >= 0) ::close(d.stop_fd);
  d.stop_fd = -1;
}

void client::command(std::string_view key, std::vector<std::string> args, reply_handler done) {
  auto d = impl_;
  if (d->stopping.load()) {
    if (done) asio::post(d->io, [done = std::move(done)] { done(std::nullopt); });
    return;
  }
  const std::uint16_t slot = d->options.cluster ? key_slot(key) : 0;
  asio::post(d->io, [d, slot, args = std::move(args), done = std::move(done)]() mutable {
    if (!d->seed) {
      if (done) done(std::nullopt);
      return;
    }
    d->routed(slot, std::move(args), std::move(done), 0);
  });
}

void client::publish(const std::string& channel, std::string payload, reply_handler done) {
  command(channel,
          {impl_->options.cluster ? "SPUBLISH" : "PUBLISH", channel, std::move(payload)},
          std::move(done));
}

void client::subscribe(std::string channel, message_handler on_message,
                       std::function<void()> on_subscribed) {
  auto s = std::make_unique<impl::subscription>();
  s->channel = std::move(channel);
  s->on_message = std::move(on_message);
  s->on_subscribed = std::move(on_subscribed);
  impl_->subscriptions.push_back(std::move(s));
}

void client::post(std::function<void()> fn) { asio::post(impl_->io, std::move(fn)); }

boost::asio::any_io_executor client::executor() { return impl_->io.get_executor(); }

void client::on_state(std::function<void(bool up)> fn) { impl_->state_listener = std::move(fn); }

bool client::connected() const { return impl_->any_up.load(); }

bool client::cluster() const { return impl_->options.cluster; }

}  // namespace parley::redis
