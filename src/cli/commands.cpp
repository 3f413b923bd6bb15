#include "cli/commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "cli/json.hpp"
#include "client/client.hpp"
#include "client/local_store.hpp"
#include "client/media_files.hpp"
#include "client/messenger.hpp"
#include "client/profile.hpp"
#include "client/ws_connection.hpp"
#include "common/clock.hpp"
#include "e2ee/library_context.hpp"
#include "wire/frame_codec.hpp"
#include "wire/username.hpp"

namespace parley::cli {
namespace {

namespace asio = boost::asio;
namespace v2 = parley::v2;
using asio::awaitable;
using client::client_error;

constexpr const char* usage_text =
    "usage: parley [--server URL] [--ca FILE] [--profile DIR] [--json] COMMAND\n"
    "  register USERNAME     create the account and this device; credentials go in the profile\n"
    "  whoami\n"
    "  send CHAT TEXT        returns once the server has stored it (✓); prints the message id\n"
    "                        and its place in the chat (chat id, seq)\n"
    "  sync [--wait SECS]    receive everything queued, store and ack it, print messages, group\n"
    "                        changes and receipts; exit after QueueEmpty (or listen for SECS)\n"
    "  read CHAT             mark everything received in the chat as read\n"
    "  status MESSAGE_ID [--who]  sent | delivered | read, for a message sent from this device;\n"
    "                        in a group: delivered to N of M, read by K (--who: their names)\n"
    "  history CHAT [--limit N]  this device's history of the chat (the server has ciphertext)\n"
    "  chat CHAT             interactive: type to send; messages, ticks, typing, presence live\n"
    "  safety-number USER    the 60-digit number to compare with USER's: equal = no one between\n"
    "  privacy last-seen on|off  show your last-seen time to your contacts (on, the default) or\n"
    "                        to nobody (off); rounded to the minute either way\n"
    "  group create NAME USER...  a group with you as admin; prints its chat id\n"
    "  group add|remove|promote|demote GROUP USER   (admins only)\n"
    "  group rename GROUP NAME   (admins only)\n"
    "  group leave GROUP\n"
    "  group info GROUP      its name, members and admins\n"
    "  send-file CHAT PATH [--caption TEXT] [--voice]  encrypts the file (up to 100 MB) on this\n"
    "                        device, uploads it (resuming if run again after a cut) and sends\n"
    "                        it; a progress bar on a terminal\n"
    "  download MESSAGE_ID [--out PATH]  fetches a received file, verifies and decrypts it\n"
    "                        (default: its name, in the current directory; never overwrites)\n"
    "CHAT is a USER (the 1:1 chat with them) or a GROUP: a group's chat id, or its name as this\n"
    "device knows it (from 'group create', 'group info' or 'sync'); @USER is always the user,\n"
    "never a group of that name\n"
    "messages are end-to-end encrypted (Signal protocol; in groups with sender keys, renewed\n"
    "whenever a member leaves); keys live in the profile's local.db\n"
    "defaults: --server ws://127.0.0.1:8080 (env PARLEY_SERVER) to register, then the server\n"
    "the profile registered with (another one named is refused), --profile ~/.parley\n"
    "(env PARLEY_PROFILE)\n"
    "--server wss://HOST:PORT connects over TLS: the server's certificate must be valid for HOST\n"
    "and signed by a CA the system trusts or, with --ca FILE (env PARLEY_CA), by one of the PEM\n"
    "certificates in FILE only; https:// media URLs (a proxy before the blob server, an S3\n"
    "store) are checked the same way\n";

// An error a person can act on; exit code 1 (2 for usage errors). With --json it goes to
// stderr as {"type":"error","message":…,"exit_code":N[,"code":…]}, `code` being the server's
// ErrorCode name without its ERROR_CODE_ prefix when the server refused the request.
struct failure {
  std::string message;
  int exit_code = 1;
  std::string code{};
};

struct options {
  std::string server;
  bool server_given = false;  // by --server or PARLEY_SERVER, not the default
  std::string ca_file;  // for wss://: trust only these CAs (empty: the system's)
  std::filesystem::path profile_dir;
  bool json = false;
  std::vector<std::string> args;  // command and its arguments
  std::optional<long> wait_secs;
  std::optional<long> limit;
  bool who = false;  // status: name who has a group message and who read it
  std::string caption;  // send-file
  bool voice = false;   // send-file: a voice note
  std::optional<std::filesystem::path> out;  // download
};

std::string status_name(v2::MessageStatus s) {
  switch (s) {
    case v2::MESSAGE_STATUS_SENT:
      return "sent";
    case v2::MESSAGE_STATUS_DELIVERED:
      return "delivered";
    case v2::MESSAGE_STATUS_READ:
      return "read";
    default:
      return "unknown";
  }
}

// Colour only on a terminal, and not when NO_COLOR is set (no-color.org): a pipe or a file
// gets the plain ticks (the status name says "read" as well).
bool colour_output() {
  static const bool on = ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  return on;
}

std::string ticks(v2::MessageStatus s) {
  switch (s) {
    case v2::MESSAGE_STATUS_SENT:
      return "✓";
    case v2::MESSAGE_STATUS_DELIVERED:
      return "✓✓";
    case v2::MESSAGE_STATUS_READ:
      return colour_output() ? "\x1b[34m✓✓\x1b[0m" : "✓✓";  // blue ticks
    default:
      return "?";
  }
}

// Statuses of the local history (derived from the peer's watermarks).
v2::MessageStatus wire_status(client::message_status s) {
  switch (s) {
    case client::message_status::sent:
      return v2::MESSAGE_STATUS_SENT;
    case client::message_status::delivered:
      return v2::MESSAGE_STATUS_DELIVERED;
    case client::message_status::read:
      return v2::MESSAGE_STATUS_READ;
    default:
      return v2::MESSAGE_STATUS_UNSPECIFIED;
  }
}

// Chat and message ids are 64-bit: strings in JSON, like every other id (not all JSON readers
// keep integers above 2^53 exact); seq numbers are numbers.
std::string id_string(std::uint64_t id) { return std::to_string(id); }

std::string clock_time(std::uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// Whether a request may have been lost on the way (the connection closed, no answer in time,
// the server unreachable): worth retrying with the same idempotency key.
bool transient(const client_error& e) {
  return e.what == client_error::kind::closed || e.what == client_error::kind::timeout ||
         e.what == client_error::kind::unreachable;
}

failure explain_server(const client_error& e, const std::string& subject) {
  if (e.what == client_error::kind::server) {
    switch (e.code) {
      case v2::ERROR_CODE_UNKNOWN_USER: {
        // The server names the user when the request named several (a group's members).
        const std::string& who = e.subject.empty() ? subject : e.subject;
        return {"unknown user" + (who.empty() ? "" : " '" + who + "'")};
      }
      case v2::ERROR_CODE_USERNAME_TAKEN:
        return {"the username" + (subject.empty() ? "" : " '" + subject + "'") + " is taken"};
      case v2::ERROR_CODE_AUTH_FAILED:
        return {
            "the server does not know this device (was its data reset?); register again with "
            "a new profile"};
      case v2::ERROR_CODE_NOT_FOUND:
        return {"no such message" + (subject.empty() ? "" : " " + subject) + " sent by you"};
      case v2::ERROR_CODE_NO_KEYS:
        return {(subject.empty() ? std::string("that user") : "'" + subject + "'") +
                " has not set up encryption yet (no keys on the server): they need to run "
                "parley once"};
      case v2::ERROR_CODE_RATE_LIMITED:
        return {"the server is limiting requests like this one: " + e.message + " (try again in " +
                std::to_string((e.retry_after_ms + 999) / 1000) + " s)"};
      case v2::ERROR_CODE_STORAGE_UNAVAILABLE:
        return {"the server cannot store anything right now (" + e.message +
                "); nothing was changed: try again later"};
      case v2::ERROR_CODE_BUSY:
        return {"the server is busy (" + e.message + "); nothing was changed: try again in " +
                std::to_string((e.retry_after_ms + 999) / 1000) + " s"};
      case v2::ERROR_CODE_NOT_ADMIN:
        return {"only the group's admins can do that"};
      case v2::ERROR_CODE_GROUP_FULL:
        return {"the group is full (1,024 members at most)"};
      case v2::ERROR_CODE_NOT_MEMBER:
        return {(subject.empty() ? std::string("that user") : "'" + subject + "'") +
                " is not a member of the group"};
      case v2::ERROR_CODE_ALREADY_MEMBER:
        return {(subject.empty() ? std::string("that user") : "'" + subject + "'") +
                " is a member of the group already"};
      case v2::ERROR_CODE_NO_SHARED_CHAT:
        return {"you have no chat with " +
                (subject.empty() ? std::string("that user") : "'" + subject + "'") + " yet"};
      default:
        break;
    }
  }
  return {client::describe(e)};
}

// A failure the server's refusal `e` caused, said as `message`: it carries the refusal's code
// (the ErrorCode name without ERROR_CODE_) for --json.
failure refused(const client_error& e, std::string message) {
  failure f{std::move(message)};
  if (e.what == client_error::kind::server) {
    constexpr std::string_view prefix = "ERROR_CODE_";
    f.code = v2::ErrorCode_Name(e.code);
    if (f.code.starts_with(prefix)) f.code.erase(0, prefix.size());
  }
  return f;
}

failure explain(const client_error& e, const std::string& subject = {}) {
  return refused(e, explain_server(e, subject).message);
}

class session {
 public:
  session(asio::io_context& io, const options& opts)
      : opts_(opts), profile_(opts.profile_dir), client_(io.get_executor()) {
    client_.set_ca_file(opts.ca_file);  // every connection of the command
  }

  client::profile& profile() { return profile_; }
  client::client& api() { return client_; }
  const client::credentials& me() const { return *me_; }
  client::messenger& messenger() { return *messenger_; }
  client::local_store& store() { return *store_; }

  void require_registered() {
    me_ = profile_.load_credentials();
    if (!me_) {
      throw failure{"not registered: run 'parley register USERNAME' first (profile " +
                    profile_.dir().string() + ")"};
    }
    open_local(me_->username, false);
  }

  // For `register` only, before the server is asked: opens the profile's local store (creating
  // it if need be) and creates this device's identity in it unless it holds one. So a register
  // cut short after the server made the account leaves credentials next to a local.db that
  // holds the identity (the next command publishes its keys), never next to one without.
  void create_identity(const std::string& username) { open_local(username, true); }

  // A registered profile talks to the server it registered with, and only to it: its token
  // (and receipts stamp) must not go to whatever the default or a mistyped --server names.
  awaitable<void> connect() {
    std::string url = opts_.server;
    if (me_ && !me_->server.empty() && me_->server != url) {
      if (opts_.server_given) {
        throw failure{"this profile is registered with " + me_->server + ", not " + url +
                          " (its token goes only to that server; --profile DIR for another "
                          "account)",
                      2};
      }
      url = me_->server;
    }
    auto r = co_await client_.connect(url);
    if (!r) throw explain(r.error());
  }

  awaitable<void> connect_and_authenticate() {
    require_registered();
    co_await connect();
    co_await authenticate();
  }

  // Authenticates the open connection, presenting the receipts stamp this device kept (so the
  // server sends only the watermarks that moved since), and publishes this device's keys if
  // the server lacks them (first run, reinstall) or runs low.
  awaitable<void> authenticate() {
    std::uint64_t kept = 0;
    try {
      kept = store_->receipts_stamp(me_->device_id);
    } catch (const std::exception& e) {
      // Presenting 0 costs only every watermark again.
      std::cerr << "parley: warning: cannot read the receipts stamp: " << e.what() << '\n';
    }
    stamps_ = client::receipts_stamp_tracker(kept);  // a new session
    auto a = co_await client_.authenticate(me_->device_id, me_->token, kept);
    if (!a) throw explain(a.error());
    auto k = co_await messenger_->publish_keys(*a);
    // Sending still works without published keys; receiving new sessions does not: say so,
    // and the next command tries again.
    if (!k) std::cerr << "parley: warning: could not publish keys: " << describe(k.error()) << '\n';
  }

  // Warns about every identity-key change of a contact not shown yet: the user decides
  // whether to trust it (compare safety numbers); nothing is re-encrypted silently.
  void show_identity_changes() {
    for (const auto& c : messenger_->take_identity_changes()) {
      out("⚠ " + c.peer + "'s safety number has changed: " + c.peer +
              " reinstalled parley or changed device, or someone is intercepting. Compare "
              "'parley safety-number " +
              c.peer + "' with " + c.peer + ".",
          json_object()
              .field("type", "identity_changed")
              .field("peer", c.peer)
              .number("at_ms", c.at_ms));
    }
  }

  bool json() const { return opts_.json; }

  void out(const std::string& human, const json_object& json) {
    std::cout << (opts_.json ? json.str() : human) << '\n' << std::flush;
  }

  // Feeds a QueueEmpty, or a Receipts frame once its receipts are applied to the local
  // watermarks (`applied` false: one or more could not be stored), to this session's receipts
  // stamp tracker, and keeps the stamp in the local store when it moves.
  // At QueueEmpty: what follows comes live, in commit order. Settles the groups this account
  // counts itself out of (messenger::settle_left_groups), now and after each group event or
  // sender key opened from here on.
  void drain_over() {
    live_ = true;
    settle_left_groups();
  }
  void settle_left_groups() {
    if (auto done = messenger_->settle_left_groups(); !done) throw explain(done.error());
  }
  bool live() const { return live_; }

  void keep_receipts_stamp(const v2::Frame& f, bool applied = true) {
    if (!applied) stamps_.unapplied();
    if (!stamps_.on_frame(f)) return;
    try {
      store_->raise_receipts_stamp(me_->device_id, stamps_.token());
    } catch (const std::exception& e) {
      // The kept stamp stays lower: the next session gets some watermarks again, no harm.
      std::cerr << "parley: warning: cannot keep the receipts stamp: " << e.what() << '\n';
    }
  }

 private:
  // Opens the local store and the messenger on it. Outside `register` (`registering`), a
  // registered profile's local.db must hold this device's identity: one that is there but holds
  // none (emptied, truncated, recreated) is refused, since a new identity would silently
  // replace the one contacts know (they would see its safety number change) and the history
  // would be gone. A 0-byte file is refused before SQLite writes to it. A local.db that is not
  // there at all is a reinstall that kept the credentials: started with a new identity here
  // (said on stderr), published by the next connection, and shown to contacts as a changed
  // safety number.
  void open_local(const std::string& username, bool registering) {
    if (messenger_) return;
    const auto path = profile_.local_store_path();
    const bool existed = std::filesystem::exists(path);
    if (existed && !registering && is_empty_file(path) &&
        (!std::filesystem::exists(wal_of(path)) || is_empty_file(wal_of(path)))) {
      throw no_identity(path);
    }
    try {
      store_ = std::make_unique<client::local_store>(path);
      library_ = std::make_unique<e2ee::library_context>();
    } catch (const std::exception& e) {
      throw failure{std::string("cannot open the local store: ") + e.what()};
    }
    // Before `register` has an answer there is no device id yet: the messenger then only makes
    // the identity (it sends nothing to a group in that run).
    messenger_ = std::make_unique<client::messenger>(client_, *store_, *library_, username,
                                                     me_ ? me_->device_id : 1);
    messenger_->on_warning(
        [](const std::string& w) { std::cerr << "parley: warning: " << w << '\n'; });
    if (messenger_->engine().has_identity()) return;
    if (existed && !registering) throw no_identity(path);
    try {
      client::local_store::transaction tx(*store_);
      auto created = messenger_->engine().create_identity(now_ms());
      if (!created) throw std::runtime_error(created.error().message());
      tx.commit();
    } catch (const std::exception& e) {
      throw failure{"cannot create this device's identity in " + path.string() + ": " + e.what()};
    }
    if (!registering) {
      std::cerr << "parley: warning: profile " << profile_.dir().string()
                << " had no local.db: this device starts with a new identity and an empty "
                   "history; your contacts will see your safety number change\n";
    }
  }

  static bool is_empty_file(const std::filesystem::path& p) {
    std::error_code ec;
    return std::filesystem::file_size(p, ec) == 0 && !ec;
  }

  static std::filesystem::path wal_of(const std::filesystem::path& db) {
    return std::filesystem::path(db.string() + "-wal");
  }

  failure no_identity(const std::filesystem::path& db) const {
    return {"profile " + profile_.dir().string() + ": " + db.filename().string() +
            " holds no identity (empty or damaged file): this device's keys and message history "
            "are not in it. Restore " +
            db.string() +
            " from a backup, or register again with a new profile (--profile DIR). parley does "
            "not make a new identity for this account by itself: your contacts would see your "
            "safety number change"};
  }

  const options& opts_;
  client::profile profile_;
  client::client client_;
  std::optional<client::credentials> me_;
  std::unique_ptr<client::local_store> store_;
  std::unique_ptr<e2ee::library_context> library_;
  std::unique_ptr<client::messenger> messenger_;
  client::receipts_stamp_tracker stamps_;  // of the current session (authenticate())
  bool live_ = false;                      // QueueEmpty was seen: pushes come live, in commit order
};

void require_user_arg(const std::string& name) {
  if (!wire::is_valid_username(name)) {
    throw failure{"'" + name + "' is not a username (3-32 characters of a-z 0-9 _ .)", 2};
  }
}

// What a CHAT argument names: the 1:1 chat with a user, or a group.
struct target {
  bool group = false;
  std::string peer;           // a user
  std::uint64_t chat_id = 0;  // a group
  std::string name;           // the group's name as this device knows it ("" if not yet)

  std::string label() const {
    if (!group) return peer;
    // The name is anyone's choice (any admin renames): shown only as printable text.
    return "group " + (name.empty() ? std::string() : "'" + printable(name) + "' ") + "(chat " +
           std::to_string(chat_id) + ")";
  }
};

[[gnu::noinline]] std::optional<std::uint64_t> parse_id(const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  try {
    return std::stoull(s);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A group named by its chat id or by its local name; nullopt if `arg` names no group this
// device knows. Several groups of that name: refused, naming their chat ids.
std::optional<client::local_group> find_group(client::local_store& store, const std::string& arg) {
  if (auto id = parse_id(arg)) {
    if (auto g = store.group(*id)) return g;
  }
  const auto named = store.groups_named(arg);
  if (named.empty()) return std::nullopt;
  if (named.size() > 1) {
    std::string ids;
    for (const auto& g : named) ids += (ids.empty() ? "" : ", ") + std::to_string(g.chat_id);
    throw failure{
        "several groups are named '" + arg + "' (chats " + ids + "): name the group by its chat id",
        2};
  }
  return named.front();
}

// A CHAT argument (see the usage text). "@NAME" is the user NAME, whatever groups are called.
// Otherwise a known group's chat id or name comes first, except that a name which is also a
// contact of this device (a user it has a chat or keys with) is refused as ambiguous: a
// group's name is chosen by whoever named it, and must not capture what is meant for a
// contact. Call after require_registered().
target resolve_chat(session& s, const std::string& arg) {
  auto& store = s.store();
  if (arg.starts_with('@')) {
    const std::string user = arg.substr(1);
    if (!wire::is_valid_username(user))
      throw failure{"'" + user + "' is not a username (3-32 characters of a-z 0-9 _ .)", 2};
    return {false, user, 0, {}};
  }
  if (auto g = find_group(store, arg)) {
    const bool named_by_id = parse_id(arg) && *parse_id(arg) == g->chat_id;
    if (!named_by_id && (store.chat_of(arg) || store.identity(arg))) {
      throw failure{"'" + arg + "' is both a contact and a group's name: name the group by its " +
                        "chat id (" + std::to_string(g->chat_id) + "), the contact as @" + arg,
                    2};
    }
    return {true, {}, g->chat_id, g->name};
  }
  if (!wire::is_valid_username(arg)) {
    throw failure{"'" + arg +
                      "' is neither a username (3-32 characters of a-z 0-9 _ .) nor a group "
                      "this device knows (run 'parley sync' to learn of new ones)",
                  2};
  }
  return {false, arg, 0, {}};
}

// `read` and `history` of a user are answered from this device's store, which cannot tell an
// unknown user from a contact with nothing yet: a user this device has no chat and no keys
// with is refused (exit 1) rather than shown as an empty chat.
void require_known_peer(session& s, const target& chat) {
  if (chat.group || s.store().chat_of(chat.peer) || s.store().identity(chat.peer)) return;
  throw failure{"this device has no chat with '" + chat.peer +
                "' (nothing sent to or received from them here; 'parley send " + chat.peer +
                " TEXT' starts one)"};
}

// A failed request about `to`, in words: a group's NOT_FOUND is this account's membership
// gone (removed, or left from another device); anything else as explain() says it.
failure explain_for(const target& to, const client_error& e) {
  if (to.group && e.what == client_error::kind::server && e.code == v2::ERROR_CODE_NOT_FOUND)
    return refused(e, "you are no longer a member of " + to.label());
  return explain(e, to.group ? to.label() : to.peer);
}

// Before work that a wrong recipient would waste (an upload, an interactive chat): a group
// this device knows it has left, or a peer who cannot be written to (unknown, without keys,
// oneself), is refused now. Opens the session with the peer if there is none yet.
awaitable<void> require_reachable(session& s, const target& to) {
  if (to.group) {
    const auto g = s.store().group(to.chat_id);
    if (g && !g->member) throw failure{"you are no longer a member of " + to.label()};
  } else if (auto ready = co_await s.messenger().prepare_session(to.peer); !ready) {
    throw explain(ready.error(), to.peer);
  }
}

// A GROUP argument of `parley group ...`: must be a group this device knows. Call after
// require_registered().
client::local_group resolve_group(session& s, const std::string& arg) {
  if (auto g = find_group(s.store(), arg)) return *g;
  throw failure{"no group '" + arg +
                    "' on this device: name it by its chat id or its name (run 'parley sync' to "
                    "learn of groups you were added to)",
                2};
}

awaitable<void> cmd_register(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley register USERNAME", 2};
  const std::string& name = o.args[1];
  require_user_arg(name);
  if (auto existing = s.profile().load_credentials()) {
    throw failure{"this profile is already registered as '" + existing->username + "' (" +
                  s.profile().dir().string() + "); use --profile DIR for another account"};
  }
  s.create_identity(name);
  co_await s.connect();
  auto r = co_await s.api().register_account(name);
  if (!r) throw explain(r.error(), name);
  s.profile().save_credentials({o.server, name, r->user_id(), r->device_id(), r->token()});
  s.require_registered();
  co_await s.authenticate();  // publishes this device's keys
  s.out("registered " + name + " (user " + std::to_string(r->user_id()) + ", device " +
            std::to_string(r->device_id()) + ")",
        json_object()
            .field("username", name)
            .field("user_id", std::to_string(r->user_id()))
            .field("device_id", std::to_string(r->device_id())));
  co_await s.api().close();
}

awaitable<void> cmd_whoami(session& s, const options& o) {
  s.require_registered();
  const auto& me = s.me();
  s.out(me.username + " (user " + std::to_string(me.user_id) + ", device " +
            std::to_string(me.device_id) + ") on " + me.server,
        json_object()
            .field("username", me.username)
            .field("user_id", std::to_string(me.user_id))
            .field("device_id", std::to_string(me.device_id))
            .field("server", me.server));
  co_return;
}

awaitable<void> cmd_privacy(session& s, const options& o) {
  if (o.args.size() != 3 || o.args[1] != "last-seen" || (o.args[2] != "on" && o.args[2] != "off"))
    throw failure{"usage: parley privacy last-seen on|off", 2};
  s.require_registered();
  const bool hide = o.args[2] == "off";
  co_await s.connect_and_authenticate();
  auto r = co_await s.api().set_privacy(hide);
  if (!r) throw explain(r.error(), "");
  s.out(hide ? "last seen hidden from everybody" : "last seen shown to your contacts",
        json_object().field("last_seen", hide ? "hidden" : "shown"));
  co_await s.api().close();
}

// Prints what a group send could not do: members who could not be given this device's sender
// key (they have never set up encryption) cannot read the message.
void warn_not_reached(const client::group_sent& sent) {
  if (sent.not_reached.empty()) return;
  std::string names;
  for (const auto& n : sent.not_reached) names += (names.empty() ? "" : ", ") + n;
  std::cerr << "parley: warning: " << names << (sent.not_reached.size() == 1 ? " has" : " have")
            << " not set up encryption yet (no keys on the server) and cannot read it\n";
}

// GCC 12 warns -Wmismatched-new-delete on this coroutine's frame, wrongly (GCC bug 109224):
// it sees Asio's awaitable_frame_base::operator delete free memory that operator new got from
// ::operator new inside Asio's recycling allocator, which is the pair Asio means. Only here.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// Before retry `attempt` (1, 2, ...) of a request whose answer may have been lost: drops the
// connection, waits 300 ms per attempt, and logs in again.
awaitable<void> reconnect_for_retry(session& s, int attempt) {
  s.api().abort();
  asio::steady_timer pause(co_await asio::this_coro::executor,
                           std::chrono::milliseconds(300 * attempt));
  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  co_await s.connect();
  co_await s.authenticate();
}

awaitable<void> cmd_send(session& s, const options& o) {
  if (o.args.size() != 3) throw failure{"usage: parley send CHAT TEXT", 2};
  if (o.args[2].empty()) throw failure{"nothing to send: the text is empty", 2};
  s.require_registered();
  const target to = resolve_chat(s, o.args[1]);
  co_await s.connect_and_authenticate();
  // Encrypted once: a retry after a lost answer sends the same ciphertext with the same
  // client_msg_id, so the server stores it once (for a group, the messenger keeps the
  // ciphertext by client_msg_id until it is sent).
  std::optional<client::sealed_message> sealed;
  if (!to.group) {
    auto r = co_await s.messenger().seal(to.peer, o.args[2]);
    if (!r) throw explain(r.error(), to.peer);
    sealed = std::move(*r);
  }
  const std::string client_msg_id = client::new_request_id();
  std::optional<client_error> last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (attempt > 0) co_await reconnect_for_retry(s, attempt);
    std::optional<v2::SendResult> sent;
    std::optional<client_error> error;
    std::vector<std::string> not_reached;
    if (to.group) {
      auto r = co_await s.messenger().send_group(to.chat_id, o.args[2], client_msg_id);
      if (r) {
        warn_not_reached(*r);
        not_reached = r->not_reached;
        sent = r->result;
      } else {
        error = r.error();
      }
    } else {
      auto r = co_await s.messenger().send(*sealed, client_msg_id);
      if (r) {
        sent = *r;
      } else {
        error = r.error();
      }
    }
    s.show_identity_changes();
    if (sent) {
      auto json = json_object()
                      .field("message_id", id_string(sent->message_id()))
                      .field("status", "sent")
                      .field("chat_id", id_string(sent->chat_id()))
                      .number("seq", sent->seq());
      if (to.group) json.field("group", to.name).strings("not_reached", not_reached);
      s.out(
          "✓ sent " + id_string(sent->message_id()) + " (" +
              (to.group ? to.label() + ", seq " : "chat " + id_string(sent->chat_id()) + ", seq ") +
              std::to_string(sent->seq()) + ")",
          json);
      co_await s.api().close();
      co_return;
    }
    if (!transient(*error)) throw explain_for(to, *error);
    last = error;
  }
  throw explain_for(to, *last);
}
#pragma GCC diagnostic pop

// A group's name as this device knows it ("" if it does not yet, or cannot read it: what is
// shown then names the group by its chat id). Every line about a group carries it: "group"
// with --json.
[[gnu::noinline]] std::string group_name(session& s, std::uint64_t chat_id) {
  try {
    if (auto g = s.store().group(chat_id)) return g->name;
  } catch (const std::exception&) {
  }
  return {};
}

// The name a group message is shown with: "alice in 'friends'".
std::string group_place(session& s, std::uint64_t chat_id) {
  return target{true, {}, chat_id, group_name(s, chat_id)}.label();
}

// Shows a Receipt that moved the peer's watermark, if it covers a message this device sent (a
// watermark also moves over the peer's own messages: nothing to show then). The message id is
// the newest message of this device's history the watermark covers.
[[gnu::noinline]] void print_receipt(session& s, const v2::Receipt& r) {
  std::optional<client::local_message> covered;
  try {
    covered = s.store().last_sent_up_to(r.chat_id(), r.up_to_seq());
    if (!covered) return;
  } catch (const std::exception&) {
    // Only the message id is left out of what is shown.
  }
  const bool read = r.status() == v2::MESSAGE_STATUS_READ;
  auto json = json_object()
                  .field("type", "receipt")
                  .field("chat_id", id_string(r.chat_id()))
                  .field("user", r.user())
                  .field("peer", r.user())
                  .field("status", status_name(r.status()))
                  .number("up_to_seq", r.up_to_seq())
                  .number("at_ms", r.at_ms());
  if (covered) json.field("message_id", id_string(covered->server_id));
  // A group's receipt has no user: every other member has the chat up to that seq.
  std::string who = r.user();
  std::string where = "chat " + id_string(r.chat_id());
  if (r.user().empty()) {
    who = "every member";
    where = group_place(s, r.chat_id());
    json.field("group", group_name(s, r.chat_id()));
  }
  s.out(ticks(r.status()) + " " + who + (read ? " read" : " received") + " up to seq " +
            std::to_string(r.up_to_seq()) + " in " + where +
            (covered ? " (message " + id_string(covered->server_id) + ")" : ""),
        json);
}

// Applies one Receipt to the local store and shows it if it moved the peer's watermark there
// (the server may send watermarks this device has already after an Authenticate: each is
// shown once), or if it could not be stored. False in that last case.
bool show_receipt(session& s, const v2::Receipt& r) {
  const auto moved = s.messenger().apply_receipt(r);
  if (!moved) {
    std::cerr << "parley: warning: receipt not stored: " << describe(moved.error()) << '\n';
  }
  if (!moved || *moved) print_receipt(s, r);
  return moved.has_value();
}

// Shows a received message (readable, or `problem` when it could not be decrypted); a group's
// messages with the group's name. `with_id`: the message id follows the text.
// A file message's `media` object for --json (what `download` needs to know: name, type,
// size; never the key), added to `json` if message `message_id` carries a file.
void add_media_json(session& s, std::uint64_t message_id, json_object& json) {
  std::optional<client::local_media> row;
  try {
    row = s.store().media(message_id);
  } catch (const std::exception&) {
  }
  parley::content::v1::Media m;
  if (!row || !m.ParseFromString(row->content)) return;
  auto media = json_object()
                   .field("media_id", m.media_id())
                   .field("file_name", m.file_name())
                   .field("mime_type", m.mime_type())
                   .number("size", m.plain_size())
                   .boolean("voice", m.voice())
                   .field("caption", m.caption());
  if (m.width() > 0 && m.height() > 0)
    media.number("width", m.width()).number("height", m.height());
  if (m.duration_ms() > 0) media.number("duration_ms", m.duration_ms());
  json.object("media", media);
}

[[gnu::noinline]] void show_message(session& s, const std::string& from, std::uint64_t message_id,
                                    std::uint64_t chat_id, std::uint64_t seq,
                                    std::uint64_t sent_at_ms, const std::string& text,
                                    const std::string& problem, bool in_group, bool with_id) {
  const std::string where = in_group ? " in " + group_place(s, chat_id) : std::string();
  auto json = json_object()
                  .field("type", problem.empty() ? "message" : "undecryptable")
                  .field("from", from)
                  .field("message_id", id_string(message_id))
                  .field("chat_id", id_string(chat_id))
                  .number("seq", seq)
                  .number("sent_at_ms", sent_at_ms);
  if (in_group) json.field("group", group_name(s, chat_id));
  if (!problem.empty()) {
    s.out("⚠ [" + clock_time(sent_at_ms) + "] a message from " + from + where + " (" +
              id_string(message_id) + ") could not be decrypted: " + problem,
          json.field("problem", problem));
    return;
  }
  json.field("text", text);
  add_media_json(s, message_id, json);
  s.out("[" + clock_time(sent_at_ms) + "] " + from + where + ": " + printable(text) +
            (with_id ? "  (" + id_string(message_id) + ")" : ""),
        json);
}

std::string change_name(v2::GroupChange c) {
  switch (c) {
    case v2::GROUP_CHANGE_CREATE:
      return "create";
    case v2::GROUP_CHANGE_ADD:
      return "add";
    case v2::GROUP_CHANGE_REMOVE:
      return "remove";
    case v2::GROUP_CHANGE_PROMOTE:
      return "promote";
    case v2::GROUP_CHANGE_DEMOTE:
      return "demote";
    case v2::GROUP_CHANGE_RENAME:
      return "rename";
    case v2::GROUP_CHANGE_LEAVE:
      return "leave";
    default:
      return "unknown";
  }
}

// A group's system message for --json, as sync and history print it. `event` is null for one
// the local history kept only the description of (received before parley kept events).
json_object event_json(session& s, const client::local_message& m, const v2::GroupEvent* event) {
  auto json = json_object().field("type", "event").field("group", group_name(s, m.chat_id));
  if (event != nullptr) {
    json.field("change", change_name(event->change()))
        .field("from", m.peer)
        .field("user", event->user())
        .field("name", event->name())
        .strings("members", {event->members().begin(), event->members().end()});
  } else {
    json.field("from", m.peer);
  }
  return json.field("text", m.text)
      .field("message_id", id_string(m.server_id))
      .field("chat_id", id_string(m.chat_id))
      .number("seq", m.seq)
      .number("sent_at_ms", m.sent_at_ms);
}

// Shows a group's system message (a change of the group).
void show_event(session& s, const v2::Envelope& e, const std::string& description) {
  s.out("[" + clock_time(e.sent_at_ms()) + "] * " + printable(description) + " (" +
            group_place(s, e.chat_id()) + ")",
        event_json(s, client::incoming_record(e, description, {}, client::message_kind::event),
                   &e.event()));
}

// Shows one pushed frame: decrypts an Envelope into the local history and records its cursor
// in `acks`; applies and shows Receipts, then keeps their stamp (session::keep_receipts_stamp;
// the caller passes QueueEmpty there). True if the frame was an Envelope now stored and to be
// acked (so shown, or recorded as undecryptable, or already in the history).
awaitable<bool> handle_push(session& s, const v2::Frame& f, client::ack_batch& acks,
                            const std::string& chat_peer = {}, bool* shown = nullptr) {
  if (f.has_envelope()) {
    const auto& e = f.envelope();
    const auto opened = s.messenger().open(e);
    // Shown to the user now or before (a duplicate): what `chat` may mark read. Not a message
    // waiting for its sender key, nor one that could not be stored.
    if (shown != nullptr) {
      using k = client::opened_message::kind;
      *shown = opened.what == k::text || opened.what == k::undecryptable ||
               opened.what == k::event || opened.what == k::duplicate;
    }
    s.show_identity_changes();
    const bool in_group = e.has_event() || e.type() == v2::CIPHER_TYPE_SENDER_KEY_MESSAGE;
    switch (opened.what) {
      case client::opened_message::kind::text:
        show_message(s, e.from(), e.message_id(), e.chat_id(), e.seq(), e.sent_at_ms(), opened.text,
                     {}, in_group, chat_peer.empty());
        break;
      case client::opened_message::kind::undecryptable:
        show_message(s, e.from(), e.message_id(), e.chat_id(), e.seq(), e.sent_at_ms(), {},
                     opened.problem, in_group, true);
        break;
      case client::opened_message::kind::event:
        // Added to a group this device did not know the name of: ask for it, and show the
        // event with it.
        if (e.event().change() == v2::GROUP_CHANGE_ADD && e.event().user() == s.me().username) {
          const auto g = s.store().group(e.chat_id());
          if (g && g->name.empty()) {
            auto info = co_await s.messenger().get_group(e.chat_id());
            if (!info)
              std::cerr << "parley: warning: cannot get the group's name: "
                        << describe(info.error()) << '\n';
          }
        }
        show_event(s, e, opened.text);
        break;
      case client::opened_message::kind::pending:
        // Shown when its sender key arrives (below, as a released message); scripts are told.
        if (s.json())
          s.out({}, json_object()
                        .field("type", "pending")
                        .field("from", e.from())
                        .field("message_id", id_string(e.message_id()))
                        .field("chat_id", id_string(e.chat_id()))
                        .number("seq", e.seq()));
        break;
      case client::opened_message::kind::sender_key:  // a member's key: nothing to show
      case client::opened_message::kind::duplicate:   // in the history: only the ack was lost
        break;
      case client::opened_message::kind::not_stored:
        // Not acked, nor anything after it in its chat (acks are cumulative): the server
        // pushes it again after the next connection.
        std::cerr << "parley: " << opened.problem << '\n';
        break;
    }
    for (const auto& m : s.messenger().take_released()) {
      show_message(s, m.peer, m.server_id, m.chat_id, m.seq, m.sent_at_ms, m.text, m.problem, true,
                   chat_peer.empty());
    }
    if (s.live() && (opened.what == client::opened_message::kind::event ||
                     opened.what == client::opened_message::kind::sender_key)) {
      s.settle_left_groups();
    }
    co_return acks.add(e, opened);
  }
  if (f.has_prekeys_low()) {
    auto r = co_await s.messenger().top_up(f.prekeys_low().remaining());
    if (!r)
      std::cerr << "parley: warning: could not top up prekeys: " << describe(r.error()) << '\n';
    co_return false;
  }
  if (f.has_receipts()) {
    bool applied = true;
    for (const auto& r : f.receipts().receipts()) applied = show_receipt(s, r) && applied;
    s.keep_receipts_stamp(f, applied);
    co_return false;
  }
  if (f.has_presence()) {
    const auto& p = f.presence();
    std::string human = p.username() + (p.online() ? " is online" : " is offline");
    if (!p.online() && p.last_seen_ms() != 0)
      human = p.username() + " was last seen at " + clock_time(p.last_seen_ms());
    s.out(human, json_object()
                     .field("type", "presence")
                     .field("user", p.username())
                     .boolean("online", p.online())
                     .number("last_seen_ms", p.last_seen_ms()));
    co_return false;
  }
  if (f.has_typing_event()) {
    const auto& t = f.typing_event();
    s.out(t.from() + (t.typing() ? " is typing…" : " stopped typing"),
          json_object()
              .field("type", "typing")
              .field("from", t.from())
              .boolean("typing", t.typing()));
    co_return false;
  }
  if (f.has_error()) {
    std::cerr << "parley: server error: " << f.error().message() << '\n';
  }
  co_return false;
}

// Acks what `acks` holds: one Ack frame for up to 1,024 chats.
awaitable<void> flush_acks(session& s, client::ack_batch& acks) {
  while (!acks.empty()) {
    auto r = co_await s.api().ack(acks.take());
    if (!r) throw explain(r.error());
  }
}

awaitable<void> cmd_sync(session& s, const options& o) {
  if (o.args.size() != 1) throw failure{"usage: parley sync [--wait SECS]", 2};
  co_await s.connect_and_authenticate();
  const auto wait = std::chrono::seconds(o.wait_secs.value_or(0));
  std::optional<std::chrono::steady_clock::time_point> deadline;
  client::ack_batch acks;
  std::size_t unacked = 0;  // envelopes stored since the last Ack
  for (;;) {
    auto timeout = std::chrono::milliseconds(15'000);
    if (deadline) {
      const auto left = *deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) break;
      timeout = std::chrono::duration_cast<std::chrono::milliseconds>(left) +
                std::chrono::milliseconds(1);
    }
    auto f = co_await s.api().next_push(timeout);
    if (!f) {
      if (f.error().what == client_error::kind::timeout && deadline) break;
      throw explain(f.error());
    }
    if (f->has_queue_empty()) {
      s.keep_receipts_stamp(*f);
      s.drain_over();
      co_await flush_acks(s, acks);
      unacked = 0;
      if (wait.count() == 0) break;
      deadline = std::chrono::steady_clock::now() + wait;
      continue;
    }
    if (co_await handle_push(s, *f, acks)) ++unacked;
    // During the drain, one Ack per 256 messages (a cut-short sync then pushes again at most
    // that many); while listening, at once.
    if (unacked >= 256 || (deadline && unacked > 0)) {
      co_await flush_acks(s, acks);
      unacked = 0;
    }
  }
  co_await flush_acks(s, acks);
  co_await s.api().close();
}

awaitable<void> cmd_read(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley read CHAT", 2};
  s.require_registered();
  const target chat = resolve_chat(s, o.args[1]);
  require_known_peer(s, chat);
  // The newest message received in the chat in this device's history: the chat is read up to
  // its seq (in a group, a message or a change of the group).
  const auto last =
      chat.group ? s.store().last_received_in(chat.chat_id) : s.store().last_received(chat.peer);
  auto json = [&](const std::string& read_up_to, std::uint64_t chat_id, std::uint64_t seq) {
    auto j = json_object();
    if (chat.group) {
      j.field("group", chat.name);
    } else {
      j.field("peer", chat.peer);
    }
    return j.field("read_up_to", read_up_to)
        .field("chat_id", id_string(chat_id))
        .number("up_to_seq", seq);
  };
  if (!last) {
    s.out("nothing received " + (chat.group ? "in " + chat.label() : "from " + chat.peer) +
              " yet (run 'parley sync' first)",
          json("0", chat.chat_id, 0));
    co_return;
  }
  co_await s.connect_and_authenticate();
  auto r = co_await s.api().mark_read(last->chat_id, last->seq);
  if (!r) {
    if (!chat.group && r.error().what == client_error::kind::server &&
        r.error().code == v2::ERROR_CODE_NOT_FOUND)
      throw refused(r.error(), "the server has no chat " + id_string(last->chat_id) + " with '" +
                                   chat.peer + "' for you (was its data reset?)");
    throw explain_for(chat, r.error());
  }
  s.out("read everything " + (chat.group ? "in " + chat.label() : "from " + chat.peer) +
            " up to seq " + std::to_string(last->seq) + " in chat " + id_string(last->chat_id) +
            " (message " + id_string(last->server_id) + ")",
        json(id_string(last->server_id), last->chat_id, last->seq));
  co_await s.api().close();
}

std::string names(const google::protobuf::RepeatedPtrField<std::string>& list) {
  std::string out;
  for (const auto& n : list) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "nobody" : out;
}

// A MESSAGE_ID argument (digits only); a usage error otherwise.
// (std::stoull would take "-5" as 2^64 - 5.)
std::uint64_t parse_message_id(const std::string& arg) {
  if (auto id = parse_id(arg)) return *id;
  throw failure{"'" + arg + "' is not a message id (digits only)", 2};
}

awaitable<void> cmd_status(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley status MESSAGE_ID [--who]", 2};
  const std::uint64_t id = parse_message_id(o.args[1]);
  // The server names a message by its chat and seq: this device's history has them for what
  // it sent.
  s.require_registered();
  const auto m = s.store().message(id);
  if (!m || m->direction != client::message_direction::outgoing ||
      m->kind != client::message_kind::text)
    throw failure{"no such message " + o.args[1] + " sent by you (from this device)"};
  if (m->chat_id == 0) {
    throw failure{"message " + o.args[1] +
                  " was sent by an older parley, before messages had a place in their chat: its "
                  "status cannot be asked"};
  }
  const bool group = s.store().is_group(m->chat_id);
  co_await s.connect_and_authenticate();
  auto r = co_await s.api().status_result(m->chat_id, m->seq, o.who);
  if (!r) throw explain(r.error(), o.args[1]);
  auto json = json_object()
                  .field("message_id", id_string(id))
                  .field("status", status_name(r->status()))
                  .field("chat_id", id_string(m->chat_id))
                  .number("seq", m->seq)
                  .number("recipients", r->recipients())
                  .number("delivered", r->delivered())
                  .number("read", r->read());
  if (o.who) {
    json.strings("delivered_to", {r->delivered_to().begin(), r->delivered_to().end()})
        .strings("read_by", {r->read_by().begin(), r->read_by().end()});
  }
  std::string human = ticks(r->status()) + " " + status_name(r->status());
  if (group) {
    // In a group: of the other members who were members when it was sent (and still are).
    human += ": delivered to " + std::to_string(r->delivered()) + " of " +
             std::to_string(r->recipients()) + ", read by " + std::to_string(r->read());
  }
  if (o.who) {
    human += "\ndelivered to: " + names(r->delivered_to()) + "\nread by: " + names(r->read_by());
  }
  s.out(human, json);
  co_await s.api().close();
}

awaitable<void> cmd_history(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley history CHAT [--limit N]", 2};
  const long limit = o.limit.value_or(50);
  if (limit < 1 || limit > 100) throw failure{"--limit must be 1-100", 2};
  // From this device's store: the server holds only ciphertext, whose keys are gone once used.
  // A sent message's ticks are what the receipts received so far say (sync updates them); in a
  // group, what all the other members have.
  s.require_registered();
  const target chat = resolve_chat(s, o.args[1]);
  require_known_peer(s, chat);
  const auto entries = chat.group
                           ? s.store().chat_history(chat.chat_id, static_cast<std::size_t>(limit))
                           : s.store().history(chat.peer, static_cast<std::size_t>(limit));
  for (const auto& m : entries) {
    const bool mine = m.direction == client::message_direction::outgoing;
    const std::string from = mine ? s.me().username : m.peer;
    if (m.kind == client::message_kind::event) {
      v2::GroupEvent event;
      const auto kept = s.store().group_event(m.server_id);
      const bool whole = kept && event.ParseFromString(*kept);
      s.out("[" + clock_time(m.sent_at_ms) + "] * " + printable(m.text),
            event_json(s, m, whole ? &event : nullptr));
      continue;
    }
    if (!m.problem.empty()) {
      s.out("⚠ [" + clock_time(m.sent_at_ms) + "] " + from +
                ": (could not be decrypted: " + m.problem + ")",
            json_object()
                .field("type", "undecryptable")
                .field("from", from)
                .field("message_id", id_string(m.server_id))
                .field("chat_id", id_string(m.chat_id))
                .number("seq", m.seq)
                .number("sent_at_ms", m.sent_at_ms)
                .field("problem", m.problem));
      continue;
    }
    auto json = json_object()
                    .field("type", "message")
                    .field("from", from)
                    .field("message_id", id_string(m.server_id))
                    .field("chat_id", id_string(m.chat_id))
                    .number("seq", m.seq)
                    .number("sent_at_ms", m.sent_at_ms)
                    .field("text", m.text);
    add_media_json(s, m.server_id, json);
    std::string status;
    if (mine) {
      json.field("status", status_name(wire_status(m.status)));
      if (m.status != client::message_status::unknown) status = "  " + ticks(wire_status(m.status));
      // Without colour, read ✓✓ look like delivered ones: say it.
      if (!colour_output() && m.status == client::message_status::read) status += " (read)";
    }
    s.out("[" + clock_time(m.sent_at_ms) + "] " + from + ": " + printable(m.text) + status, json);
  }
  if (chat.group) {
    // Received, but their senders' keys have not arrived (yet): shown once they do.
    for (const auto& p : s.store().pending_in(chat.chat_id)) {
      s.out("⌛ [" + clock_time(p.sent_at_ms) + "] " + p.sender + ": (waiting for " + p.sender +
                "'s key)",
            json_object()
                .field("type", "pending")
                .field("from", p.sender)
                .field("message_id", id_string(p.server_id))
                .field("chat_id", id_string(p.chat_id))
                .number("seq", p.seq)
                .number("sent_at_ms", p.sent_at_ms));
    }
  }
  co_return;
}

awaitable<void> cmd_safety_number(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley safety-number USER", 2};
  const std::string& peer = o.args[1];
  require_user_arg(peer);
  s.require_registered();
  if (peer == s.me().username)
    throw failure{"a safety number is between you and someone else: name another user", 2};
  co_await s.connect_and_authenticate();
  auto n = co_await s.messenger().safety_number(peer);
  if (!n) throw explain(n.error(), peer);
  s.show_identity_changes();
  std::string grouped;  // 12 groups of 5 digits, as Signal shows it
  for (std::size_t i = 0; i < n->size(); i += 5) {
    if (!grouped.empty()) grouped += (i % 20 == 0) ? "\n" : " ";
    grouped += n->substr(i, 5);
  }
  const auto changes = s.store().identity_changes(peer);
  std::string note = "compare with what 'parley safety-number " + s.me().username + "' shows " +
                     peer + ": equal numbers mean no one is in between";
  if (!changes.empty()) {
    note += "\n" + peer + "'s key changed " + std::to_string(changes.size()) +
            (changes.size() == 1 ? " time" : " times") + ", last at " +
            clock_time(changes.back().at_ms);
  }
  s.out("safety number with " + peer + ":\n" + grouped + "\n" + note,
        json_object()
            .field("peer", peer)
            .field("safety_number", *n)
            .number("identity_changes", changes.size()));
  co_await s.api().close();
}

// Reads stdin line by line and sends each line to the chat; sets `done` at end of input.
awaitable<void> chat_input(session& s, target chat, bool& done) {
  auto ex = co_await asio::this_coro::executor;
  asio::posix::stream_descriptor in(ex, ::dup(STDIN_FILENO));
  // A line is one message: longer than any message can be (64 KiB of payload), it is refused
  // whole, skipped to its end, as `send` refuses it, never cut into pieces sent apart.
  constexpr std::size_t max_line = 64 * 1024;
  asio::streambuf buf(max_line);
  bool skipping = false;  // inside a line that was too long
  for (;;) {
    auto [ec, n] =
        co_await asio::async_read_until(in, buf, '\n', asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::not_found) {  // the buffer is full and holds no newline
      if (!skipping)
        std::cerr << "parley: not sent: a line of more than " << max_line / 1024
                  << " KiB (a message holds at most 64 KiB)\n";
      skipping = true;
      buf.consume(buf.size());
      continue;
    }
    if (n == 0 && buf.size() > 0 && ec) n = buf.size();  // a last line without newline
    if (n == 0) break;
    std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    buf.consume(n);
    if (skipping) {  // the end of the line that was too long
      skipping = false;
      continue;
    }
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    std::optional<v2::SendResult> r;
    if (chat.group) {
      auto sent = co_await s.messenger().send_group(chat.chat_id, line, client::new_request_id());
      s.show_identity_changes();
      if (!sent) {
        std::cerr << "parley: not sent: " << explain(sent.error(), chat.label()).message << '\n';
        continue;
      }
      warn_not_reached(*sent);
      r = sent->result;
    } else {
      auto sealed = co_await s.messenger().seal(chat.peer, line);
      if (!sealed) {
        std::cerr << "parley: not sent: " << explain(sealed.error(), chat.peer).message << '\n';
        continue;
      }
      auto sent = co_await s.messenger().send(std::move(*sealed), client::new_request_id());
      s.show_identity_changes();
      if (!sent) {
        std::cerr << "parley: not sent: " << explain(sent.error(), chat.peer).message << '\n';
        continue;
      }
      r = *sent;
    }
    s.out("✓ " + id_string(r->message_id()) + " (seq " + std::to_string(r->seq()) + ")",
          json_object()
              .field("message_id", id_string(r->message_id()))
              .field("status", "sent")
              .field("chat_id", id_string(r->chat_id()))
              .number("seq", r->seq()));
  }
  done = true;
}

awaitable<void> cmd_chat(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley chat CHAT", 2};
  s.require_registered();
  const target chat = resolve_chat(s, o.args[1]);
  co_await s.connect_and_authenticate();
  // A recipient who cannot be written to ends the command at once rather than refusing every
  // line typed.
  co_await require_reachable(s, chat);
  // Presence of the peer, or of the group's members (the server shows it only to those who
  // share a chat).
  std::vector<std::string> watched{chat.peer};
  if (chat.group) {
    auto info = co_await s.messenger().get_group(chat.chat_id);
    if (!info) throw explain_for(chat, info.error());
    watched.clear();
    for (const auto& m : info->members()) {
      if (m.user() != s.me().username) watched.push_back(m.user());
    }
  }
  if (!watched.empty()) {
    auto sub = co_await s.api().subscribe_presence(watched);
    if (!sub) throw explain(sub.error(), chat.peer);
  }
  if (!o.json)
    std::cout << "chatting " << (chat.group ? "in " : "with ") << chat.label()
              << " — type a line and Enter to send; Ctrl-D to quit\n";

  auto ex = co_await asio::this_coro::executor;
  bool input_done = false;
  // Input: each line is a message to the chat.
  asio::co_spawn(ex, chat_input(s, chat, input_done), [](std::exception_ptr) {});

  client::ack_batch acks;
  std::uint64_t read_up_to = 0;  // the highest seq marked read in the chat
  while (!input_done) {
    auto f = co_await s.api().next_push(std::chrono::milliseconds(200));
    if (!f) {
      if (f.error().what == client_error::kind::timeout) continue;
      throw explain(f.error());
    }
    if (f->has_queue_empty()) {
      s.keep_receipts_stamp(*f);
      s.drain_over();
      continue;
    }
    // Named first: GCC 12 mis-destroys a conditional's temporary inside a co_await.
    const std::string place = chat.group ? chat.label() : chat.peer;
    bool shown = false;
    const bool stored = co_await handle_push(s, *f, acks, place, &shown);
    if (!acks.empty()) s.api().ack_async(acks.take());
    // The chat is open: what arrives in it is read as soon as it is shown (blue ticks). Not
    // past a message that could not be stored, or that waits for its sender key: it has not
    // been shown.
    const auto& e = f->envelope();
    const bool in_chat = chat.group ? e.chat_id() == chat.chat_id
                                    : e.from() == chat.peer && !e.has_event() &&
                                          e.type() != v2::CIPHER_TYPE_SENDER_KEY_MESSAGE;
    if (stored && shown && in_chat && e.seq() > read_up_to) {
      auto r = co_await s.api().mark_read(e.chat_id(), e.seq());
      if (r) {
        read_up_to = e.seq();
      } else {
        std::cerr << "parley: read receipt failed: " << explain(r.error()).message << '\n';
      }
    }
  }
  co_await s.api().close();
}

// A group as every `group` command prints it with --json, `group create` included.
json_object group_json(const v2::GroupInfo& info) {
  std::vector<json_object> list;
  std::vector<std::string> admin_names;
  for (const auto& m : info.members()) {
    if (m.admin()) admin_names.push_back(m.user());
    list.push_back(json_object()
                       .field("user", m.user())
                       .boolean("admin", m.admin())
                       .number("joined_seq", m.joined_seq()));
  }
  return json_object()
      .field("chat_id", id_string(info.chat_id()))
      .field("name", info.name())
      .objects("members", list)
      .strings("admins", admin_names)
      .number("seq", info.seq());
}

// Shows a group's name, members and admins (`what`: what happened, for the first line).
void show_group(session& s, const std::string& what, const v2::GroupInfo& info) {
  std::string members;
  std::string admins;
  for (const auto& m : info.members()) {
    members += (members.empty() ? "" : ", ") + m.user();
    if (m.admin()) admins += (admins.empty() ? "" : ", ") + m.user();
  }
  s.out(what + "group '" + printable(info.name()) + "' (chat " + id_string(info.chat_id()) +
            ")\nmembers: " + members + "\nadmins: " + (admins.empty() ? "none" : admins),
        group_json(info));
}

// --- files ------------------------------------------------------------------------------------

// A transfer's progress on stderr, redrawn in place: bytes, rate, time left. Only on a terminal
// and never with --json (whose output is for programs).
class progress_bar {
 public:
  progress_bar(const options& o, std::string what)
      : shown_(!o.json && ::isatty(STDERR_FILENO) == 1), what_(std::move(what)),
        start_(std::chrono::steady_clock::now()) {}
  client::transfer_progress fn() {
    if (!shown_) return {};
    return [this](std::uint64_t done, std::uint64_t total) { draw(done, total); };
  }
  void finish() {
    if (shown_ && drawn_) std::cerr << '\n';
  }

 private:
  void draw(std::uint64_t done, std::uint64_t total) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    const double left = rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : 0;
    char line[160];
    std::snprintf(line, sizeof line, "\r%s %6.1f / %.1f MB  %6.1f MB/s  ETA %4.0f s ",
                  what_.c_str(), static_cast<double>(done) / 1e6,
                  static_cast<double>(total) / 1e6, rate / 1e6, left);
    std::cerr << line << std::flush;
    drawn_ = true;
  }
  bool shown_;
  bool drawn_ = false;
  std::string what_;
  std::chrono::steady_clock::time_point start_;
};

// GCC 12 warns -Wmismatched-new-delete on these coroutines' frames, wrongly (GCC bug 109224;
// see cmd_send).
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
awaitable<void> cmd_send_file(session& s, const options& o) {
  if (o.args.size() != 3)
    throw failure{"usage: parley send-file CHAT PATH [--caption TEXT] [--voice]", 2};
  s.require_registered();
  const target to = resolve_chat(s, o.args[1]);
  co_await s.connect_and_authenticate();
  // The recipient is checked before the upload, which a wrong name would waste (and which
  // counts against the account's quota until it is swept).
  co_await require_reachable(s, to);
  client::file_to_send file{o.args[2], {}, o.caption, o.voice};
  progress_bar bar(o, "upload  ");
  const auto work_dir = s.profile().dir() / "media";
  auto progress = bar.fn();
  auto media = co_await client::upload_file(s.api(), s.store(), file, work_dir, progress);
  bar.finish();
  if (!media) throw explain(media.error(), to.group ? to.label() : to.peer);
  const std::string client_msg_id = client::new_request_id();
  std::optional<v2::SendResult> sent;
  std::vector<std::string> not_reached;
  if (to.group) {
    auto r = co_await s.messenger().send_group_media(to.chat_id, *media, client_msg_id);
    if (!r) throw explain_for(to, r.error());
    warn_not_reached(*r);
    not_reached = r->not_reached;
    sent = r->result;
  } else {
    auto sealed = co_await s.messenger().seal_media(to.peer, *media);
    if (!sealed) throw explain(sealed.error(), to.peer);
    auto r = co_await s.messenger().send(std::move(*sealed), client_msg_id);
    if (!r) throw explain(r.error(), to.peer);
    sent = *r;
  }
  s.show_identity_changes();
  client::finish_upload(s.store(), file.path);
  auto json = json_object()
                  .field("message_id", id_string(sent->message_id()))
                  .field("status", "sent")
                  .field("chat_id", id_string(sent->chat_id()))
                  .number("seq", sent->seq())
                  .field("media_id", media->media_id())
                  .number("size", media->plain_size());
  if (to.group) json.field("group", to.name).strings("not_reached", not_reached);
  s.out("✓ sent " + id_string(sent->message_id()) + " (" + client::describe_media(*media) +
            ", " + (to.group ? to.label() : "chat " + id_string(sent->chat_id())) + ", seq " +
            std::to_string(sent->seq()) + ")",
        json);
  co_await s.api().close();
}

// Where a download goes by default: the sender's file name, reduced to a plain name in the
// current directory (never a path of the sender's choosing).
std::filesystem::path default_download_path(const std::string& sender_name, std::uint64_t id) {
  std::string name = std::filesystem::path(sender_name).filename().string();
  for (char& c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '/' || c == '\\') c = '_';
  }
  if (name.empty() || name == "." || name == ".." || name.front() == '.') {
    name = "parley-file-" + std::to_string(id) + name;
  }
  return name;
}

awaitable<void> cmd_download(session& s, const options& o) {
  if (o.args.size() != 2) throw failure{"usage: parley download MESSAGE_ID [--out PATH]", 2};
  const std::uint64_t id = parse_message_id(o.args[1]);
  s.require_registered();
  const auto row = s.store().media(id);
  if (!row) throw failure{"message " + o.args[1] + " carries no file this device knows of"};
  parley::content::v1::Media m;
  if (!m.ParseFromString(row->content)) throw failure{"the file record is unreadable"};
  const auto out = o.out ? *o.out : default_download_path(m.file_name(), id);
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    throw failure{out.string() + " exists: give another --out PATH (nothing is overwritten)"};
  }
  // Where the file goes must be a directory that exists: found before anything is fetched.
  const auto into = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(into, ec)) {
    throw failure{"cannot save " + out.string() + ": " + into.string() + " is not a directory"};
  }
  co_await s.connect_and_authenticate();
  progress_bar bar(o, "download");
  const auto work_dir = s.profile().dir() / "media";
  auto progress = bar.fn();
  auto r = co_await client::download_file(s.api(), s.store(), id, out, work_dir, progress);
  bar.finish();
  if (!r) {
    if (r.error().what == client_error::kind::server &&
        r.error().code == v2::ERROR_CODE_NOT_FOUND) {
      throw refused(r.error(), "the server has no file for message " + o.args[1] +
                                   " that you may fetch (not a member of its chat any more, or "
                                   "it was deleted)");
    }
    throw explain(r.error());
  }
  s.out("✓ saved " + out.string() + " (" + std::to_string(*r) + " bytes, verified)",
        json_object()
            .field("message_id", id_string(id))
            .field("path", out.string())
            .number("size", *r)
            .field("mime_type", m.mime_type()));
  co_await s.api().close();
}

#pragma GCC diagnostic pop

// GCC bug 109224 again (see cmd_send): with the creation's retry loop this frame gets the same
// false warning.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
awaitable<void> cmd_group(session& s, const options& o) {
  constexpr const char* usage =
      "usage: parley group create NAME USER... | add|remove|promote|demote GROUP USER | "
      "rename GROUP NAME | leave GROUP | info GROUP";
  if (o.args.size() < 3) throw failure{usage, 2};
  const std::string& sub = o.args[1];
  s.require_registered();
  if (sub == "create") {
    const std::string& name = o.args[2];
    std::vector<std::string> members(o.args.begin() + 3, o.args.end());
    for (const auto& m : members) require_user_arg(m);
    co_await s.connect_and_authenticate();
    // As for a send: a lost answer is retried with the same id, and the server answers with
    // the group the first attempt created instead of making a second one.
    const std::string request_id = client::new_request_id();
    auto info = co_await s.messenger().create_group(name, members, request_id);
    for (int attempt = 1; attempt < 3 && !info && transient(info.error()); ++attempt) {
      co_await reconnect_for_retry(s, attempt);
      info = co_await s.messenger().create_group(name, members, request_id);
    }
    if (!info) throw explain(info.error());
    s.out("created group '" + printable(info->name()) + "': chat " + id_string(info->chat_id()) +
              " (" + std::to_string(info->members_size()) +
              (info->members_size() == 1 ? " member)" : " members)"),
          group_json(*info));
    co_await s.api().close();
    co_return;
  }
  const auto group = resolve_group(s, o.args[2]);
  const target place{true, {}, group.chat_id, group.name};
  v2::GroupChange change = v2::GROUP_CHANGE_UNSPECIFIED;
  std::string user;
  std::string name;
  std::string done;
  if (sub == "add" || sub == "remove" || sub == "promote" || sub == "demote") {
    if (o.args.size() != 4) throw failure{usage, 2};
    user = o.args[3];
    require_user_arg(user);
    change = sub == "add"       ? v2::GROUP_CHANGE_ADD
             : sub == "remove"  ? v2::GROUP_CHANGE_REMOVE
             : sub == "promote" ? v2::GROUP_CHANGE_PROMOTE
                                : v2::GROUP_CHANGE_DEMOTE;
    done = sub == "add"       ? "added " + user + " to "
           : sub == "remove"  ? "removed " + user + " from "
           : sub == "promote" ? "made " + user + " an admin of "
                              : user + " is no longer an admin of ";
  } else if (sub == "rename") {
    if (o.args.size() != 4) throw failure{usage, 2};
    change = v2::GROUP_CHANGE_RENAME;
    name = o.args[3];
    done = "renamed ";
  } else if (sub == "leave") {
    if (o.args.size() != 3) throw failure{usage, 2};
    change = v2::GROUP_CHANGE_LEAVE;
  } else if (sub != "info" || o.args.size() != 3) {
    throw failure{usage, 2};
  }
  co_await s.connect_and_authenticate();
  client::result<v2::GroupInfo> info = client_error{};
  if (change == v2::GROUP_CHANGE_UNSPECIFIED) {
    info = co_await s.messenger().get_group(group.chat_id);
  } else {
    info = co_await s.messenger().update_group(group.chat_id, change, user, name);
  }
  if (!info) {
    if (info.error().what == client_error::kind::server &&
        info.error().code == v2::ERROR_CODE_NOT_FOUND)
      throw explain_for(place, info.error());
    // The rules a change can break (protocol.md, UpdateGroup), said in words.
    if (info.error().what == client_error::kind::server &&
        info.error().code == v2::ERROR_CODE_INVALID_ARGUMENT) {
      if (change == v2::GROUP_CHANGE_REMOVE && user == s.me().username)
        throw refused(info.error(),
                      "you cannot remove yourself: 'parley group leave " + o.args[2] + "'");
      if (change == v2::GROUP_CHANGE_DEMOTE)
        throw refused(info.error(), "the group must keep an admin: promote another member first");
    }
    throw explain(info.error(), user);
  }
  if (change == v2::GROUP_CHANGE_LEAVE) {
    s.out("you left " + place.label(), json_object()
                                           .field("chat_id", id_string(group.chat_id))
                                           .field("name", group.name)
                                           .boolean("left", true));
  } else {
    show_group(s, done.empty() ? "" : done, *info);
  }
  co_await s.api().close();
}
#pragma GCC diagnostic pop

// Refuses a server URL that client::parse_ws_url refuses, saying why: above all a port that is
// not a decimal 1-65535 (the resolver took "70000" modulo 65536, 4464, and "http" as a
// service: a connection to another port than the one written). `source` names where it came
// from.
void check_server_url(const std::string& url, const std::string& source) {
  const std::string why = client::ws_url_problem(url);
  if (why.empty()) return;
  throw failure{source + " '" + url + "': " + why +
                    " (expected ws://HOST:PORT or wss://HOST:PORT, e.g. ws://127.0.0.1:8080)",
                2};
}

// Refuses a CA file that cannot be read, naming it and where it came from; whether it holds
// certificates is found when a wss:// connection loads it ("TLS: cannot load the CA file").
void check_ca_file(const std::string& path, const std::string& source) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec) && std::ifstream(path)) return;
  throw failure{source + " '" + path + "': cannot read the file (expected PEM CA certificates)", 2};
}

// A failure on stderr: one line of JSON with --json (message without its trailing newline),
// otherwise "parley: " and the message (a usage text as it is).
void report(const failure& f, bool json) {
  std::string message = f.message;
  while (!message.empty() && message.back() == '\n') message.pop_back();
  if (json) {
    auto j = json_object()
                 .field("type", "error")
                 .field("message", message)
                 .number("exit_code", static_cast<std::uint64_t>(f.exit_code));
    if (!f.code.empty()) j.field("code", f.code);
    std::cerr << j.str() << '\n';
    return;
  }
  std::cerr << (message.starts_with("usage:") ? "" : "parley: ") << message << '\n';
}

// Whether --json is among the options, known before they are parsed so that an error in them
// is JSON too. The value of an option that takes one (`--caption --json`) is not the flag.
bool wants_json(int argc, char** argv) {
  constexpr std::array<std::string_view, 7> take_a_value{
      "--server", "--ca", "--profile", "--wait", "--limit", "--caption", "--out"};
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--json") return true;
    if (std::find(take_a_value.begin(), take_a_value.end(), a) != take_a_value.end()) ++i;
  }
  return false;
}

[[gnu::noinline]] options parse(int argc, char** argv) {
  options o;
  const char* env_server = std::getenv("PARLEY_SERVER");
  o.server = env_server ? env_server : "ws://127.0.0.1:8080";
  o.server_given = env_server != nullptr;
  std::string server_source = env_server ? "PARLEY_SERVER" : "the default server";
  const char* env_ca = std::getenv("PARLEY_CA");
  o.ca_file = env_ca ? env_ca : "";
  std::string ca_source = "PARLEY_CA";
  if (const char* p = std::getenv("PARLEY_PROFILE")) {
    o.profile_dir = p;
  } else if (const char* home = std::getenv("HOME")) {
    o.profile_dir = std::filesystem::path(home) / ".parley";
  } else {
    o.profile_dir = ".parley";
  }
  auto number = [](const std::string& flag, const std::string& v) {
    try {
      std::size_t used = 0;
      long n = std::stol(v, &used);
      if (used == v.size() && n >= 0) return n;
    } catch (const std::exception&) {
    }
    throw failure{flag + " needs a non-negative number", 2};
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw failure{a + " needs a value", 2};
      return argv[++i];
    };
    if (a == "--server") {
      o.server = value();
      o.server_given = true;
      server_source = "--server";
    } else if (a == "--ca") {
      o.ca_file = value();
      ca_source = "--ca";
    } else if (a == "--profile") {
      o.profile_dir = value();
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--wait") {
      o.wait_secs = number(a, value());
    } else if (a == "--limit") {
      o.limit = number(a, value());
    } else if (a == "--who") {
      o.who = true;
    } else if (a == "--caption") {
      o.caption = value();
    } else if (a == "--voice") {
      o.voice = true;
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--help" || a == "-h") {
      throw failure{usage_text, 0};
    } else if (a.size() > 2 && a.rfind("--", 0) == 0) {
      throw failure{"unknown option " + a, 2};
    } else {
      o.args.push_back(a);
    }
  }
  if (o.args.empty()) throw failure{usage_text, 2};
  check_server_url(o.server, server_source);
  if (!o.ca_file.empty()) check_ca_file(o.ca_file, ca_source);
  return o;
}

}  // namespace

[[gnu::noinline]] int run(int argc, char** argv) {
  wire::silence_protobuf_logging();
  const bool json = wants_json(argc, argv);
  try {
    options o = parse(argc, argv);
    asio::io_context io(1);
    session s(io, o);
    const std::string& command = o.args[0];
    awaitable<void> (*fn)(session&, const options&) = nullptr;
    if (command == "register")
      fn = cmd_register;
    else if (command == "whoami")
      fn = cmd_whoami;
    else if (command == "send")
      fn = cmd_send;
    else if (command == "sync")
      fn = cmd_sync;
    else if (command == "read")
      fn = cmd_read;
    else if (command == "status")
      fn = cmd_status;
    else if (command == "history")
      fn = cmd_history;
    else if (command == "chat")
      fn = cmd_chat;
    else if (command == "safety-number")
      fn = cmd_safety_number;
    else if (command == "privacy")
      fn = cmd_privacy;
    else if (command == "group")
      fn = cmd_group;
    else if (command == "send-file")
      fn = cmd_send_file;
    else if (command == "download")
      fn = cmd_download;
    else
      throw failure{"unknown command '" + command + "'\n" + usage_text, 2};

    std::exception_ptr error;
    asio::co_spawn(io, fn(s, o), [&](std::exception_ptr e) {
      error = e;
      io.stop();
    });
    io.run();
    if (error) std::rethrow_exception(error);
    return 0;
  } catch (const failure& f) {
    if (f.exit_code == 0) {
      std::cout << f.message;
      return 0;
    }
    report(f, json);
    return f.exit_code;
  } catch (const std::exception& e) {
    report(failure{e.what()}, json);
    return 1;
  }
}

}  // namespace parley::cli
