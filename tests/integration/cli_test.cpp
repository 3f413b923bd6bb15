// The parley CLI as a user runs it, against a real parleyd: the quick-start session of the
// README, JSON output for scripts, and the errors a person sees.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>

#include "client/client.hpp"
#include "client/local_store.hpp"
#include "client/profile.hpp"
#include "server_process.hpp"
#include "sqlite_file.hpp"
#include "temp_dir.hpp"

namespace parley::test {
namespace {

namespace fs = std::filesystem;

struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class cli : public ::testing::Test {
 protected:
  // Runs `parley --server URL --profile ROOT/<who> ARGS...`, with `input` on stdin (URL
  // "none": no --server, and no PARLEY_SERVER either).
  run_result parley(const std::string& who, const std::vector<std::string>& args,
                    const std::string& input = "", const std::string& url = "") {
    const auto err_file = root_.path() / "stderr";
    const auto in_file = root_.path() / "stdin";
    std::ofstream(in_file) << input;
    std::string cmd = url == "none" ? "env -u PARLEY_SERVER " + std::string(PARLEY_CLI_PATH)
                                    : std::string(PARLEY_CLI_PATH) + " --server " +
                                          shell_quote(url.empty() ? server.url() : url);
    cmd += " --profile " + shell_quote((root_.path() / who).string());
    for (const auto& a : args) cmd += " " + shell_quote(a);
    cmd += " <" + shell_quote(in_file.string()) + " 2>" + shell_quote(err_file.string());
    run_result r;
    FILE* p = ::popen(cmd.c_str(), "r");
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream e(err_file);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
    return r;
  }

  // A string field's value, its JSON escapes (\" and \\) undone ("" if there is none).
  static std::string field(const std::string& json, const std::string& key) {
    std::smatch m;
    std::regex re("\"" + key + "\": \"((?:[^\"\\\\]|\\\\.)*)\"");
    if (!std::regex_search(json, m, re)) return "";
    std::string out;
    const std::string raw = m[1].str();
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) ++i;
      out.push_back(raw[i]);
    }
    return out;
  }
  // A number field's digits ("" if there is none).
  static std::string number(const std::string& json, const std::string& key) {
    std::smatch m;
    std::regex re("\"" + key + "\": ([0-9]+)");
    return std::regex_search(json, m, re) ? m[1].str() : "";
  }
  // The lines of `out` that hold `needle`.
  static std::vector<std::string> lines_with(const std::string& out, const std::string& needle) {
    std::vector<std::string> found;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.find(needle) != std::string::npos) found.push_back(line);
    }
    return found;
  }

  server_process server;
  test_support::temp_dir root_{"parley_cli_test_"};
};

TEST_F(cli, quick_start_chat_with_ticks) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  auto who = parley("alice", {"--json", "whoami"});
  EXPECT_EQ(field(who.out, "username"), "alice");

  auto sent = parley("alice", {"--json", "send", "bob", "hi bob — ünïcode ✓"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  const std::string id = field(sent.out, "message_id");
  ASSERT_FALSE(id.empty()) << sent.out;
  EXPECT_EQ(field(sent.out, "status"), "sent");
  // The first message makes the chat: its place in the log is seq 1.
  const std::string chat = field(sent.out, "chat_id");
  ASSERT_FALSE(chat.empty()) << sent.out;
  EXPECT_NE(chat, "0");
  EXPECT_EQ(number(sent.out, "seq"), "1") << sent.out;
  auto status = parley("alice", {"--json", "status", id});
  EXPECT_EQ(field(status.out, "status"), "sent") << status.err;
  EXPECT_EQ(field(status.out, "chat_id"), chat);
  EXPECT_EQ(number(status.out, "seq"), "1");

  auto synced = parley("bob", {"--json", "sync"});
  ASSERT_EQ(synced.exit_code, 0) << synced.err;
  EXPECT_EQ(field(synced.out, "type"), "message");
  EXPECT_EQ(field(synced.out, "from"), "alice");
  EXPECT_EQ(field(synced.out, "message_id"), id);
  EXPECT_EQ(field(synced.out, "chat_id"), chat);
  EXPECT_EQ(number(synced.out, "seq"), "1");
  EXPECT_EQ(field(synced.out, "text"), "hi bob — ünïcode ✓");
  EXPECT_EQ(field(parley("alice", {"--json", "status", id}).out, "status"), "delivered");

  // Synced and acked: a second sync has nothing.
  EXPECT_EQ(parley("bob", {"--json", "sync"}).out, "");

  auto read = parley("bob", {"--json", "read", "alice"});
  ASSERT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(field(read.out, "chat_id"), chat);
  EXPECT_EQ(number(read.out, "up_to_seq"), "1");
  EXPECT_EQ(field(read.out, "read_up_to"), id);
  EXPECT_EQ(field(parley("alice", {"--json", "status", id}).out, "status"), "read");

  // The receipts reach alice as watermarks of chat `chat`: bob has it delivered and read up to
  // seq 1, which covers her message.
  auto receipts = parley("alice", {"--json", "sync"});
  ASSERT_EQ(receipts.exit_code, 0) << receipts.err;
  const auto delivered = lines_with(receipts.out, "\"status\": \"delivered\"");
  const auto read_receipt = lines_with(receipts.out, "\"status\": \"read\"");
  ASSERT_EQ(delivered.size(), 1u) << receipts.out;
  ASSERT_EQ(read_receipt.size(), 1u) << receipts.out;
  for (const auto& line : {delivered[0], read_receipt[0]}) {
    EXPECT_EQ(field(line, "type"), "receipt") << line;
    EXPECT_EQ(field(line, "chat_id"), chat) << line;
    EXPECT_EQ(field(line, "user"), "bob") << line;
    EXPECT_EQ(number(line, "up_to_seq"), "1") << line;
    EXPECT_EQ(field(line, "message_id"), id) << line;
  }
  // Each watermark is shown once (the server sends them again only to a device that presents
  // no receipts stamp, unchanged).
  EXPECT_EQ(parley("alice", {"--json", "sync"}).out, "");

  auto history = parley("bob", {"history", "alice"});
  EXPECT_NE(history.out.find("alice: hi bob"), std::string::npos) << history.out;
  // Alice's copy of the chat has her message read, from the receipts.
  auto mine = parley("alice", {"--json", "history", "bob"});
  EXPECT_EQ(field(mine.out, "status"), "read") << mine.out;
  EXPECT_EQ(number(mine.out, "seq"), "1") << mine.out;
  // The human output shows the ticks; on a pipe (as here) without colour codes, so the
  // history says "(read)" in words.
  auto human = parley("alice", {"status", id});
  EXPECT_NE(human.out.find("read"), std::string::npos);
  EXPECT_EQ(human.out.find('\x1b'), std::string::npos) << human.out;
  auto plain_history = parley("alice", {"history", "bob"});
  EXPECT_NE(plain_history.out.find("  ✓✓ (read)\n"), std::string::npos) << plain_history.out;
  EXPECT_EQ(plain_history.out.find('\x1b'), std::string::npos) << plain_history.out;
  auto human_receipts = parley("alice", {"sync"});
  EXPECT_EQ(human_receipts.out, "");
}

TEST_F(cli, privacy_hides_last_seen) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  auto off = parley("alice", {"--json", "privacy", "last-seen", "off"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_EQ(field(off.out, "last_seen"), "hidden");
  // The server has it: the next login reports the setting.
  boost::asio::io_context io;
  auto creds = client::profile(root_.path() / "alice").load_credentials();
  ASSERT_TRUE(creds);
  client::client c(io.get_executor());
  ASSERT_TRUE(block_on(io, c.connect(server.url())));
  auto a = block_on(io, c.authenticate(creds->device_id, creds->token));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->hide_last_seen());
  auto on = parley("alice", {"--json", "privacy", "last-seen", "on"});
  EXPECT_EQ(field(on.out, "last_seen"), "shown");
  EXPECT_EQ(parley("alice", {"privacy", "last-seen", "maybe"}).exit_code, 2);
}

TEST_F(cli, chat_sends_each_line_and_marks_incoming_read) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  auto before = parley("bob", {"--json", "send", "alice", "are you there?"});
  const std::string id = field(before.out, "message_id");

  auto chat = parley("alice", {"--json", "chat", "bob"}, "yes!\nsecond line\n");
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_EQ(std::count(chat.out.begin(), chat.out.end(), '\n') >= 2, true) << chat.out;

  // Each line sent has its place in the chat: seq 2 and 3 after bob's first message.
  const auto sent = lines_with(chat.out, "\"status\": \"sent\"");
  ASSERT_EQ(sent.size(), 2u) << chat.out;
  EXPECT_EQ(number(sent[0], "seq"), "2") << sent[0];
  EXPECT_EQ(number(sent[1], "seq"), "3") << sent[1];
  EXPECT_EQ(field(sent[0], "chat_id"), field(before.out, "chat_id"));

  auto synced = parley("bob", {"--json", "sync"});
  EXPECT_NE(synced.out.find("\"text\": \"yes!\""), std::string::npos) << synced.out;
  EXPECT_NE(synced.out.find("\"text\": \"second line\""), std::string::npos) << synced.out;
  // The chat showed bob's message and marked it read: bob sees his message read, and the
  // watermark that says so.
  EXPECT_EQ(field(parley("bob", {"--json", "status", id}).out, "status"), "read");
  const auto read = lines_with(synced.out, "\"status\": \"read\"");
  ASSERT_EQ(read.size(), 1u) << synced.out;
  EXPECT_EQ(field(read[0], "user"), "alice");
  EXPECT_EQ(number(read[0], "up_to_seq"), "1");
}

// A line longer than a message can be is refused whole by `chat`, never sent in pieces; the
// next line goes as usual.
TEST_F(cli, chat_refuses_a_line_too_long_for_a_message_whole) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "hi"}).exit_code, 0);
  const std::string input = std::string(100'000, 'y') + "\nafter\n" + std::string(70'000, 'z');
  auto chatted = parley("alice", {"chat", "bob"}, input);
  EXPECT_EQ(chatted.exit_code, 0) << chatted.err;
  EXPECT_EQ(lines_with(chatted.err, "not sent: a line of more than 64 KiB").size(), 2u)
      << chatted.err;
  auto at_bob = parley("bob", {"--json", "sync"});
  EXPECT_EQ(lines_with(at_bob.out, "\"text\": \"after\"").size(), 1u) << at_bob.out;
  EXPECT_EQ(at_bob.out.find("yyy"), std::string::npos) << "a piece of the long line was sent";
  EXPECT_EQ(at_bob.out.find("zzz"), std::string::npos) << "a piece of the last line was sent";
}

TEST_F(cli, errors_a_person_understands) {
  auto not_registered = parley("nobody", {"send", "bob", "hi"});
  EXPECT_EQ(not_registered.exit_code, 1);
  EXPECT_NE(not_registered.err.find("not registered"), std::string::npos) << not_registered.err;

  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  auto unknown = parley("alice", {"send", "bobby", "hi"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown user 'bobby'"), std::string::npos) << unknown.err;

  auto taken = parley("other", {"register", "alice"});
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_NE(taken.err.find("taken"), std::string::npos) << taken.err;

  auto usage = parley("alice", {"send", "bob"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_NE(usage.err.find("usage: parley send CHAT TEXT"), std::string::npos) << usage.err;

  auto bad_name = parley("alice", {"send", "Bob!", "hi"});
  EXPECT_EQ(bad_name.exit_code, 2);

  EXPECT_EQ(parley("alice", {"send", "bobby", ""}).exit_code, 2);  // nothing to send
  auto own_number = parley("alice", {"safety-number", "alice"});
  EXPECT_EQ(own_number.exit_code, 2);
  EXPECT_NE(own_number.err.find("someone else"), std::string::npos) << own_number.err;

  // A chat with nobody, or with oneself, ends at once instead of refusing every line.
  auto nobody = parley("alice", {"chat", "bobby"}, "hello?\n");
  EXPECT_EQ(nobody.exit_code, 1);
  EXPECT_NE(nobody.err.find("unknown user 'bobby'"), std::string::npos) << nobody.err;
  auto self = parley("alice", {"chat", "alice"}, "hello?\n");
  EXPECT_EQ(self.exit_code, 1);
  EXPECT_NE(self.err.find("sending to yourself is not supported"), std::string::npos) << self.err;
  EXPECT_EQ(self.err.find("encryption"), std::string::npos) << self.err;

  auto unreachable = parley("zed", {"register", "zed"}, "", "ws://127.0.0.1:1");
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_NE(unreachable.err.find("server not reachable"), std::string::npos) << unreachable.err;
  // A registered profile's token goes only to the server it registered with: another one
  // named is refused before anything is sent.
  auto elsewhere = parley("alice", {"send", "alice", "hi"}, "", "ws://127.0.0.1:1");
  EXPECT_EQ(elsewhere.exit_code, 2);
  EXPECT_NE(elsewhere.err.find("this profile is registered with " + server.url()),
            std::string::npos)
      << elsewhere.err;
  // Without --server, the profile's own server (not the default ws://127.0.0.1:8080).
  auto home = parley("alice", {"sync"}, "", "none");
  EXPECT_EQ(home.exit_code, 0) << home.err;

  auto bad_status = parley("alice", {"status", "12345"});
  EXPECT_EQ(bad_status.exit_code, 1);
  EXPECT_NE(bad_status.err.find("no such message"), std::string::npos) << bad_status.err;
  // Not a message id at all: a usage error, whatever the characters.
  for (const std::string arg : {"-5", "abc", "+5", "12x"}) {
    auto not_an_id = parley("alice", {"status", arg});
    EXPECT_EQ(not_an_id.exit_code, 2) << arg;
    EXPECT_NE(not_an_id.err.find("is not a message id"), std::string::npos) << not_an_id.err;
  }

  // read and history answer from this device: a user it has no chat with is said to be one,
  // not shown as an empty chat.
  for (const std::string command : {"read", "history"}) {
    auto no_chat = parley("alice", {command, "bobby"});
    EXPECT_EQ(no_chat.exit_code, 1) << command;
    EXPECT_NE(no_chat.err.find("no chat with 'bobby'"), std::string::npos) << no_chat.err;
  }

  // A group with a member who does not exist: the server names which.
  ASSERT_EQ(parley("carol", {"register", "carol"}).exit_code, 0);
  auto no_member = parley("alice", {"group", "create", "club", "carol", "zed.x", "bobby"});
  EXPECT_EQ(no_member.exit_code, 1);
  EXPECT_NE(no_member.err.find("unknown user 'zed.x'"), std::string::npos) << no_member.err;
}

// With --json a failure is one JSON object on stderr, whatever failed: the options, the
// command's arguments, or the server's answer (with its error code).
TEST_F(cli, errors_are_json_with_json) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  auto refused = parley("alice", {"--json", "send", "bobby", "hi"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.out, "");
  EXPECT_EQ(field(refused.err, "type"), "error") << refused.err;
  EXPECT_EQ(field(refused.err, "message"), "unknown user 'bobby'") << refused.err;
  EXPECT_EQ(field(refused.err, "code"), "UNKNOWN_USER") << refused.err;
  EXPECT_EQ(number(refused.err, "exit_code"), "1") << refused.err;

  auto usage = parley("alice", {"--json", "send", "bobby"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(number(usage.err, "exit_code"), "2") << usage.err;
  EXPECT_EQ(field(usage.err, "message"), "usage: parley send CHAT TEXT") << usage.err;
  EXPECT_EQ(usage.err.find("\"code\""), std::string::npos) << usage.err;  // not the server's

  auto bad_option = parley("alice", {"--json", "--limit", "x", "history", "bobby"});
  EXPECT_EQ(bad_option.exit_code, 2);
  EXPECT_EQ(field(bad_option.err, "message"), "--limit needs a non-negative number")
      << bad_option.err;
  // "--json" as an option's value is that value, not the flag.
  auto caption = parley("alice", {"send-file", "bobby", "/nonexistent", "--caption", "--json"});
  EXPECT_EQ(caption.exit_code, 1);
  EXPECT_EQ(caption.err.rfind("parley: ", 0), 0u) << caption.err;
  for (const auto& r : {refused, usage, bad_option}) {
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;  // one line
    EXPECT_EQ(r.err.rfind("{\"type\": \"error\", ", 0), 0u) << r.err;
  }
}

TEST_F(cli, credentials_and_keys_are_private) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  for (const char* file : {"credentials", "local.db"}) {
    const auto perms = fs::status(root_.path() / "alice" / file).permissions();
    EXPECT_EQ(perms & (fs::perms::group_all | fs::perms::others_all), fs::perms::none) << file;
  }
  const auto dir = fs::status(root_.path() / "alice").permissions();
  EXPECT_EQ(dir & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);
}

TEST_F(cli, safety_numbers_match_and_history_is_local) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "one"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"send", "alice", "two"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"sync"}).exit_code, 0);

  auto at_alice = parley("alice", {"--json", "safety-number", "bob"});
  auto at_bob = parley("bob", {"--json", "safety-number", "alice"});
  ASSERT_EQ(at_alice.exit_code, 0) << at_alice.err;
  const std::string number = field(at_alice.out, "safety_number");
  EXPECT_EQ(number.size(), 60u);
  EXPECT_EQ(number, field(at_bob.out, "safety_number"));
  auto human = parley("alice", {"safety-number", "bob"});
  EXPECT_NE(human.out.find(number.substr(0, 5) + " " + number.substr(5, 5)), std::string::npos)
      << human.out;

  // Both directions, from this device's own store.
  auto history = parley("alice", {"history", "bob"});
  const auto one = history.out.find("alice: one");
  const auto two = history.out.find("bob: two");
  ASSERT_NE(one, std::string::npos) << history.out;
  ASSERT_NE(two, std::string::npos) << history.out;
  EXPECT_LT(one, two);

  auto to_nobody = parley("alice", {"safety-number", "nobody"});
  EXPECT_EQ(to_nobody.exit_code, 1);
  auto to_self = parley("alice", {"send", "alice", "note"});
  EXPECT_EQ(to_self.exit_code, 1);
  EXPECT_NE(to_self.err.find("yourself"), std::string::npos) << to_self.err;
}

TEST_F(cli, a_contacts_reinstall_is_shown_as_a_warning) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "before"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);
  const auto before =
      field(parley("alice", {"--json", "safety-number", "bob"}).out, "safety_number");

  // Bob's device loses its keys (a reinstall that kept the account): his next run publishes a
  // new identity.
  for (const auto& e : fs::directory_iterator(root_.path() / "bob")) {
    if (e.path().filename().string().rfind("local.db", 0) == 0) fs::remove(e.path());
  }
  auto reinstalled = parley("bob", {"sync"});
  ASSERT_EQ(reinstalled.exit_code, 0) << reinstalled.err;
  // Not silent for bob either.
  EXPECT_NE(reinstalled.err.find("new identity"), std::string::npos) << reinstalled.err;

  auto sent = parley("alice", {"--json", "send", "bob", "after"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_NE(sent.out.find("\"type\": \"identity_changed\""), std::string::npos) << sent.out;
  EXPECT_NE(sent.out.find("\"peer\": \"bob\""), std::string::npos) << sent.out;
  auto synced = parley("bob", {"--json", "sync"});
  EXPECT_NE(synced.out.find("\"text\": \"after\""), std::string::npos) << synced.out;

  const auto after =
      field(parley("alice", {"--json", "safety-number", "bob"}).out, "safety_number");
  EXPECT_NE(after, before);
  EXPECT_EQ(after, field(parley("bob", {"--json", "safety-number", "alice"}).out, "safety_number"));
  // Shown once, then remembered in the safety-number output.
  auto again = parley("alice", {"send", "bob", "again"});
  EXPECT_EQ(again.out.find("changed"), std::string::npos) << again.out;
  EXPECT_NE(parley("alice", {"safety-number", "bob"}).out.find("changed 1 time"),
            std::string::npos);
}

// A local.db that is there but holds no identity (here: emptied to 0 bytes) is refused by every
// command: a new identity would change alice's safety number for bob and lose her history.
TEST_F(cli, an_empty_local_db_is_refused_not_replaced_by_a_new_identity) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "before"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);
  const auto before =
      field(parley("bob", {"--json", "safety-number", "alice"}).out, "safety_number");
  ASSERT_FALSE(before.empty());

  const auto db = root_.path() / "alice" / "local.db";
  fs::resize_file(db, 0);
  for (const char* suffix : {"-wal", "-shm"}) fs::remove(db.string() + suffix);

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"sync"}, {"send", "bob", "after"}, {"history", "bob"}, {"read", "bob"}}) {
    auto r = parley("alice", args);
    EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.out;
    EXPECT_NE(r.err.find("local.db holds no identity"), std::string::npos) << args[0] << r.err;
    EXPECT_NE(r.err.find("backup"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find((root_.path() / "alice").string()), std::string::npos) << r.err;
  }
  EXPECT_EQ(fs::file_size(db), 0u);  // left as it was, for whoever restores it

  // Nothing reached bob: alice's identity on the server is the one he knows.
  auto synced = parley("bob", {"--json", "sync"});
  EXPECT_EQ(synced.out.find("identity_changed"), std::string::npos) << synced.out;
  EXPECT_EQ(field(parley("bob", {"--json", "safety-number", "alice"}).out, "safety_number"),
            before);
}

// The same for a local.db that is a valid database without an identity in it.
TEST_F(cli, a_local_db_without_an_identity_is_refused) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  const auto dir = root_.path() / "alice";
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(dir.string() + "/local.db" + suffix);
  { client::local_store tables_only(dir / "local.db"); }

  for (int attempt = 0; attempt < 2; ++attempt) {  // the refusal did not create one either
    auto r = parley("alice", {"sync"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.err.find("local.db holds no identity"), std::string::npos) << r.err;
  }
}

using test_support::query_int;
using test_support::run_sql;

// A local.db of the first format (protocol v1: messages without chat_id and seq, no chats,
// watermarks or receipts stamps) is migrated when opened: keys and history are kept; its old
// messages have no place in a chat, so their status cannot be asked. One of schema 2 (no
// receipts stamps) is migrated too, and keeps one from its next sync. A local.db of a newer
// format is refused.
TEST_F(cli, an_old_local_db_is_migrated_and_a_newer_one_refused) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  auto before = parley("alice", {"--json", "send", "bob", "before"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  const std::string old_id = field(before.out, "message_id");
  const auto db = root_.path() / "alice" / "local.db";
  ASSERT_TRUE(run_sql(db,
                      "DROP INDEX messages_by_chat; ALTER TABLE messages DROP COLUMN chat_id; "
                      "ALTER TABLE messages DROP COLUMN seq; DROP TABLE chats; "
                      "DROP TABLE watermarks; DROP TABLE receipts_stamps; "
                      "PRAGMA user_version = 0;"));

  auto history = parley("alice", {"history", "bob"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_NE(history.out.find("alice: before"), std::string::npos) << history.out;
  auto old_status = parley("alice", {"status", old_id});
  EXPECT_EQ(old_status.exit_code, 1);
  EXPECT_NE(old_status.err.find("older parley"), std::string::npos) << old_status.err;
  // The same identity and session go on: bob reads both messages; the new one has its seq.
  auto after = parley("alice", {"--json", "send", "bob", "after"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(number(after.out, "seq"), "2") << after.out;
  EXPECT_EQ(
      field(parley("alice", {"--json", "status", field(after.out, "message_id")}).out, "status"),
      "sent");
  auto synced = parley("bob", {"--json", "sync"});
  EXPECT_NE(synced.out.find("\"text\": \"before\""), std::string::npos) << synced.out;
  EXPECT_NE(synced.out.find("\"text\": \"after\""), std::string::npos) << synced.out;
  EXPECT_EQ(synced.out.find("identity_changed"), std::string::npos) << synced.out;
  EXPECT_EQ(query_int(db, "PRAGMA user_version"), client::local_store::schema_version);

  // Schema 2: migrated by the next command, whose sync keeps the receipts stamp of its
  // QueueEmpty (bob's delivered watermark moved meanwhile).
  ASSERT_TRUE(run_sql(db, "DROP TABLE receipts_stamps; PRAGMA user_version = 2;"));
  const std::string device = field(parley("alice", {"--json", "whoami"}).out, "device_id");
  ASSERT_FALSE(device.empty());
  auto receipts = parley("alice", {"--json", "sync"});
  ASSERT_EQ(receipts.exit_code, 0) << receipts.err;
  EXPECT_EQ(lines_with(receipts.out, "\"status\": \"delivered\"").size(), 1u) << receipts.out;
  EXPECT_EQ(query_int(db, "PRAGMA user_version"), client::local_store::schema_version);
  const auto stamp = query_int(db, "SELECT stamp FROM receipts_stamps WHERE device_id = " + device);
  ASSERT_TRUE(stamp);
  EXPECT_GT(*stamp, 0);
  auto history_after = parley("alice", {"history", "bob"});
  EXPECT_NE(history_after.out.find("alice: before"), std::string::npos) << history_after.out;
  EXPECT_NE(history_after.out.find("alice: after"), std::string::npos) << history_after.out;

  ASSERT_TRUE(run_sql(db, "PRAGMA user_version = 99;"));
  auto newer = parley("alice", {"sync"});
  EXPECT_EQ(newer.exit_code, 1) << newer.err;
  EXPECT_NE(newer.err.find(db.string() + " has format version 99, newer than this parley"),
            std::string::npos)
      << newer.err;
}

// sync keeps the receipts stamp of its session in local.db and every later connection presents
// it: the server then sends only the watermarks that moved after it. Seen here by emptying
// alice's local watermarks: with her stamp, a sync gets nothing back (nothing moved); without
// it (the stamp removed), the server sends every watermark again and she sees the receipt.
TEST_F(cli, sync_keeps_the_receipts_stamp_and_presents_it) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  const auto db = root_.path() / "alice" / "local.db";
  const std::string device = field(parley("alice", {"--json", "whoami"}).out, "device_id");
  ASSERT_FALSE(device.empty());
  const std::string stamp_sql = "SELECT stamp FROM receipts_stamps WHERE device_id = " + device;
  auto sent = parley("alice", {"--json", "send", "bob", "hello"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_FALSE(query_int(db, stamp_sql)) << "only a sync keeps a stamp";
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);  // acks: bob's delivered watermark moves

  auto first = parley("alice", {"--json", "sync"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(lines_with(first.out, "\"type\": \"receipt\"").size(), 1u) << first.out;
  const auto kept = query_int(db, stamp_sql);
  ASSERT_TRUE(kept);
  EXPECT_GT(*kept, 0);

  ASSERT_TRUE(run_sql(db, "DELETE FROM watermarks;"));
  auto with_stamp = parley("alice", {"--json", "sync"});
  ASSERT_EQ(with_stamp.exit_code, 0) << with_stamp.err;
  EXPECT_EQ(with_stamp.out, "") << "the server resent a watermark that did not move";
  const auto still = query_int(db, stamp_sql);
  ASSERT_TRUE(still);
  EXPECT_GE(*still, *kept);  // never lowered

  ASSERT_TRUE(run_sql(db, "DELETE FROM receipts_stamps;"));
  auto without = parley("alice", {"--json", "sync"});
  ASSERT_EQ(without.exit_code, 0) << without.err;
  const auto again = lines_with(without.out, "\"type\": \"receipt\"");
  ASSERT_EQ(again.size(), 1u) << without.out;
  EXPECT_EQ(field(again[0], "status"), "delivered") << again[0];
  EXPECT_EQ(field(again[0], "message_id"), field(sent.out, "message_id")) << again[0];
  EXPECT_TRUE(query_int(db, stamp_sql));
}

TEST_F(cli, a_malformed_credentials_file_is_named_with_what_was_expected) {
  const auto dir = root_.path() / "alice";
  fs::create_directories(dir);
  std::ofstream(dir / "credentials")
      << "server=" << server.url()
      << "\nusername=alice\nuser_id=seven\ndevice_id=1\ntoken=" << std::string(64, 'a') << "\n";
  for (const char* command : {"whoami", "sync"}) {
    auto r = parley("alice", {command});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find((dir / "credentials").string()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("user_id must be a decimal number, got 'seven'"), std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("stoull"), std::string::npos) << r.err;
  }
  // register does not write over it either.
  EXPECT_EQ(parley("alice", {"register", "alice"}).exit_code, 1);
}

TEST(cli_profile, malformed_credentials_name_the_file_line_and_what_was_expected) {
  test_support::temp_dir dir("parley_cli_profile_test_");
  client::profile p(dir.path());
  EXPECT_FALSE(p.load_credentials());  // no file: not registered

  const std::string token = std::string(64, 'b');
  auto error_for = [&](const std::string& text) -> std::string {
    std::ofstream(dir.path() / "credentials", std::ios::trunc) << text;
    try {
      p.load_credentials();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  const std::string file = (dir.path() / "credentials").string();
  const std::string good = "server=ws://127.0.0.1:8080\nusername=alice\nuser_id=7\n";

  auto not_a_number = error_for(good + "device_id=x1\ntoken=" + token + "\n");
  EXPECT_NE(not_a_number.find("malformed credentials file " + file), std::string::npos)
      << not_a_number;
  EXPECT_NE(not_a_number.find("line 4: device_id must be a decimal number, got 'x1'"),
            std::string::npos)
      << not_a_number;
  EXPECT_NE(not_a_number.find("device_id=NUMBER"), std::string::npos) << not_a_number;
  // std::stoull took these as 18446744073709551615 and 12.
  EXPECT_NE(error_for(good + "device_id=-1\ntoken=" + token + "\n").find("device_id"),
            std::string::npos);
  EXPECT_NE(error_for(good + "device_id=12x\ntoken=" + token + "\n").find("'12x'"),
            std::string::npos);
  EXPECT_NE(
      error_for(good + "device_id=99999999999999999999\ntoken=" + token + "\n").find("device_id"),
      std::string::npos);

  // A token that is not 64 hex digits: named, and not echoed (it is a secret).
  auto bad_token = error_for(good + "device_id=3\ntoken=" + token.substr(2) + "zz\n");
  EXPECT_NE(bad_token.find("token must be 64 hex digits"), std::string::npos) << bad_token;
  EXPECT_EQ(bad_token.find(token.substr(2)), std::string::npos) << bad_token;

  auto missing = error_for(good);
  EXPECT_NE(missing.find(file), std::string::npos) << missing;
  EXPECT_NE(missing.find("device_id token"), std::string::npos) << missing;

  // What save_credentials writes still loads.
  p.save_credentials({"ws://127.0.0.1:8080", "alice", 7, 3, std::string(32, '\x11')});
  auto loaded = p.load_credentials();
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->username, "alice");
  EXPECT_EQ(loaded->user_id, 7u);
  EXPECT_EQ(loaded->device_id, 3u);
}

// A port above 65535 used to wrap around (modulo 65536) in the resolver: with the server's port
// plus 65536, register reached the server. Non-numeric and empty ports are refused too.
TEST_F(cli, a_server_url_with_a_bad_port_is_refused) {
  const std::string wrapped =
      "ws://127.0.0.1:" + std::to_string(static_cast<unsigned>(server.port()) + 65536);
  auto r = parley("alice", {"register", "alice"}, "", wrapped);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("--server '" + wrapped + "'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the port must be a number from 1 to 65535"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root_.path() / "alice" / "credentials"));

  for (const std::string url : {"ws://127.0.0.1:http", "ws://127.0.0.1:", "ws://127.0.0.1:0",
                                "ws://127.0.0.1:-80", "ws://127.0.0.1:99999999999999999999"}) {
    auto bad = parley("alice", {"register", "alice"}, "", url);
    EXPECT_EQ(bad.exit_code, 2) << url << ": " << bad.err;
    EXPECT_NE(bad.err.find("port"), std::string::npos) << url << ": " << bad.err;
  }
  // The same URL with the server's own port works.
  EXPECT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
}

// A group as its members use it: created with a name, then named by that name or its chat id
// in send, sync, history, status, read and group info; a removed member is told and gets
// nothing after it; only admins change the group.

// --- files -----------------------------------------------------------------------------------

// A file of `size` bytes: a recognisable text, then bytes of every value.
void write_test_file(const fs::path& p, std::size_t size) {
  std::string data = "a quarterly report nobody else may read";
  while (data.size() < size) data.push_back(static_cast<char>(data.size() * 7));
  data.resize(size);
  std::ofstream(p, std::ios::binary) << data;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST_F(cli, a_file_is_sent_synced_downloaded_and_verified) {
  for (const std::string name : {"alice", "bob", "carol"})
    ASSERT_EQ(parley(name, {"register", name}).exit_code, 0);
  const auto report = root_.path() / "report.pdf";
  write_test_file(report, 300'000);

  auto sent = parley("alice", {"--json", "send-file", "bob", report.string(), "--caption",
                               "q3 numbers"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  const std::string id = field(sent.out, "message_id");
  ASSERT_FALSE(id.empty()) << sent.out;
  EXPECT_EQ(field(sent.out, "media_id").size(), 32u) << sent.out;
  EXPECT_EQ(number(sent.out, "size"), "300000");
  EXPECT_TRUE(sent.err.empty()) << "no progress bar off a terminal: " << sent.err;
  // Nothing is left of the upload once it is sent: no encrypted copy, no resume state.
  EXPECT_TRUE(fs::is_empty(root_.path() / "alice" / "media"));
  EXPECT_EQ(test_support::query_int(root_.path() / "alice" / "local.db",
                                    "SELECT count(*) FROM uploads"),
            0);

  auto synced = parley("bob", {"--json", "sync"});
  ASSERT_EQ(synced.exit_code, 0) << synced.err;
  const auto files = lines_with(synced.out, "[file] report.pdf (300.0 kB): q3 numbers");
  ASSERT_EQ(files.size(), 1u) << synced.out;
  EXPECT_EQ(field(files[0], "message_id"), id);
  // Scripts get the file's description as fields (never its key), here and in the history.
  EXPECT_NE(files[0].find("\"media\": {\"media_id\": \""), std::string::npos) << files[0];
  EXPECT_EQ(field(files[0], "file_name"), "report.pdf");
  EXPECT_EQ(field(files[0], "mime_type"), "application/pdf");
  EXPECT_EQ(number(files[0], "size"), "300000");
  EXPECT_EQ(field(files[0], "caption"), "q3 numbers");
  EXPECT_NE(files[0].find("\"voice\": false"), std::string::npos) << files[0];
  EXPECT_EQ(files[0].find("\"key\""), std::string::npos) << files[0];
  const auto in_history = lines_with(parley("bob", {"--json", "history", "alice"}).out,
                                     "\"file_name\": \"report.pdf\"");
  EXPECT_EQ(in_history.size(), 1u);

  const auto out = root_.path() / "bob-report.pdf";
  auto got = parley("bob", {"--json", "download", id, "--out", out.string()});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(number(got.out, "size"), "300000");
  EXPECT_EQ(field(got.out, "mime_type"), "application/pdf");
  EXPECT_EQ(file_bytes(out), file_bytes(report));
  // Never overwritten; a message id this device has no file for is named as such.
  auto again = parley("bob", {"download", id, "--out", out.string()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("exists"), std::string::npos) << again.err;
  auto nowhere = parley("bob", {"download", id, "--out", (root_.path() / "no" / "x.pdf").string()});
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_NE(nowhere.err.find("is not a directory"), std::string::npos) << nowhere.err;
  auto none = parley("carol", {"download", id});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("carries no file"), std::string::npos) << none.err;
  // The sender downloads its own file too.
  const auto back = root_.path() / "alice-copy.pdf";
  ASSERT_EQ(parley("alice", {"download", id, "--out", back.string()}).exit_code, 0);
  EXPECT_EQ(file_bytes(back), file_bytes(report));
  // The server holds the file only as ciphertext.
  EXPECT_EQ(file_bytes(report).find("a quarterly report"), 0u);
  for (const auto& e : fs::recursive_directory_iterator(server.data_dir())) {
    if (!e.is_regular_file()) continue;
    EXPECT_EQ(file_bytes(e.path()).find("a quarterly report"), std::string::npos) << e.path();
  }

  // A voice note is shown as one.
  const auto voice = root_.path() / "note.ogg";
  write_test_file(voice, 5'000);
  ASSERT_EQ(parley("alice", {"send-file", "bob", voice.string(), "--voice"}).exit_code, 0);
  auto heard = parley("bob", {"--json", "sync"});
  EXPECT_EQ(lines_with(heard.out, "[voice note]").size(), 1u) << heard.out;
}

TEST_F(cli, a_file_to_a_group_reaches_its_members_and_an_upload_is_resumed_not_redone) {
  for (const std::string name : {"alice", "bob", "carol"})
    ASSERT_EQ(parley(name, {"register", name}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"group", "create", "team", "bob", "carol"}).exit_code, 0);
  const auto photo = root_.path() / "photo.jpg";
  write_test_file(photo, 150'000);
  auto sent = parley("alice", {"--json", "send-file", "team", photo.string()});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  const std::string id = field(sent.out, "message_id");
  EXPECT_EQ(field(sent.out, "group"), "team");
  for (const std::string member : {"bob", "carol"}) {
    ASSERT_EQ(parley(member, {"sync"}).exit_code, 0);
    const auto out = root_.path() / (member + ".jpg");
    auto got = parley(member, {"download", id, "--out", out.string()});
    ASSERT_EQ(got.exit_code, 0) << member << ": " << got.err;
    EXPECT_EQ(file_bytes(out), file_bytes(photo)) << member;
  }

  auto blobs_on_server = [&] {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(server.data_dir() / "data" / "media" /
                                                         "blobs")) {
      if (e.is_regular_file()) ++n;
    }
    return n;
  };
  auto uploads_kept = [&] {
    return test_support::query_int(root_.path() / "alice" / "local.db",
                                   "SELECT count(*) FROM uploads");
  };
  const std::size_t before = blobs_on_server();
  const auto doc = root_.path() / "doc.txt";
  write_test_file(doc, 70'000);

  // A recipient that cannot be reached is found before anything is uploaded: a user who does
  // not exist, this account itself.
  for (const std::string nobody : {"dave", "alice"}) {
    auto refused = parley("alice", {"send-file", nobody, doc.string(), "--caption", "old"});
    EXPECT_NE(refused.exit_code, 0) << refused.out;
    EXPECT_EQ(refused.err.find("encryption"), std::string::npos) << refused.err;
    EXPECT_EQ(blobs_on_server(), before) << nobody;
    EXPECT_EQ(uploads_kept(), 0) << nobody;
  }

  // An upload whose message the server refuses (alice was removed from the group by bob, and
  // her device has not seen it yet) is kept, and the next run sends it without uploading
  // again, with that run's caption: one blob more on the server, not two.
  ASSERT_EQ(parley("alice", {"group", "promote", "team", "bob"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"group", "remove", "team", "alice"}).exit_code, 0);
  auto failed = parley("alice", {"send-file", "team", doc.string(), "--caption", "old"});
  EXPECT_EQ(failed.exit_code, 1) << failed.out;
  EXPECT_NE(failed.err.find("no longer a member"), std::string::npos) << failed.err;
  EXPECT_EQ(blobs_on_server(), before + 1);
  EXPECT_EQ(uploads_kept(), 1);
  auto retried = parley("alice", {"--json", "send-file", "bob", doc.string(), "--caption", "new"});
  ASSERT_EQ(retried.exit_code, 0) << retried.err;
  EXPECT_EQ(blobs_on_server(), before + 1);
  EXPECT_EQ(uploads_kept(), 0);
  auto at_bob = parley("bob", {"--json", "sync"});
  EXPECT_EQ(lines_with(at_bob.out, "doc.txt (70.0 kB): new").size(), 1u) << at_bob.out;
  EXPECT_EQ(at_bob.out.find(": old"), std::string::npos) << at_bob.out;
}

TEST_F(cli, a_group_by_name_or_id_from_create_to_removal) {
  for (const std::string name : {"alice", "bob", "carol"})
    ASSERT_EQ(parley(name, {"register", name}).exit_code, 0);
  auto created = parley("alice", {"--json", "group", "create", "trio", "bob", "carol"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string chat = field(created.out, "chat_id");
  ASSERT_FALSE(chat.empty()) << created.out;
  EXPECT_EQ(field(created.out, "name"), "trio");
  // The shape every group command prints: members as objects, the admins by name.
  EXPECT_EQ(lines_with(created.out, "\"user\": ").size(), 1u) << created.out;
  for (const std::string member : {"alice", "bob", "carol"})
    EXPECT_NE(created.out.find("{\"user\": \"" + member + "\", \"admin\": "), std::string::npos)
        << created.out;
  EXPECT_NE(created.out.find("\"admins\": [\"alice\"]"), std::string::npos) << created.out;
  EXPECT_NE(number(created.out, "seq"), "") << created.out;

  auto sent = parley("alice", {"--json", "send", "trio", "hello trio"});  // by its name
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  const std::string id = field(sent.out, "message_id");
  EXPECT_EQ(field(sent.out, "chat_id"), chat);
  EXPECT_EQ(field(sent.out, "group"), "trio");

  std::string create_at_bob;  // the CREATE event's line in bob's sync
  for (const std::string member : {"bob", "carol"}) {
    auto synced = parley(member, {"--json", "sync"});
    ASSERT_EQ(synced.exit_code, 0) << synced.err;
    const auto events = lines_with(synced.out, "\"type\": \"event\"");
    ASSERT_EQ(events.size(), 1u) << synced.out;
    if (member == "bob") create_at_bob = events[0];
    EXPECT_EQ(field(events[0], "change"), "create");
    EXPECT_EQ(field(events[0], "group"), "trio");
    EXPECT_EQ(field(events[0], "text"), "alice created the group \"trio\" with bob, carol");
    const auto messages = lines_with(synced.out, "\"text\": \"hello trio\"");
    ASSERT_EQ(messages.size(), 1u) << synced.out;
    EXPECT_EQ(field(messages[0], "from"), "alice");
    EXPECT_EQ(field(messages[0], "group"), "trio");
    EXPECT_EQ(field(messages[0], "chat_id"), chat);
    EXPECT_EQ(field(messages[0], "message_id"), id);
  }
  // Delivered to both; read by one.
  ASSERT_EQ(parley("bob", {"read", "trio"}).exit_code, 0);
  auto status = parley("alice", {"--json", "status", id, "--who"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(number(status.out, "recipients"), "2") << status.out;
  EXPECT_EQ(number(status.out, "delivered"), "2") << status.out;
  EXPECT_EQ(number(status.out, "read"), "1") << status.out;
  EXPECT_NE(status.out.find("\"read_by\": [\"bob\"]"), std::string::npos) << status.out;
  auto human = parley("alice", {"status", id});
  EXPECT_NE(human.out.find("delivered to 2 of 2, read by 1"), std::string::npos) << human.out;

  // Bob answers, by the chat id.
  auto reply = parley("bob", {"--json", "send", chat, "hi from bob"});
  ASSERT_EQ(reply.exit_code, 0) << reply.err;
  auto at_alice = parley("alice", {"--json", "sync"});
  EXPECT_EQ(lines_with(at_alice.out, "\"text\": \"hi from bob\"").size(), 1u) << at_alice.out;
  auto history = parley("bob", {"history", "trio"});
  EXPECT_NE(history.out.find("* alice created the group \"trio\""), std::string::npos)
      << history.out;
  EXPECT_NE(history.out.find("alice: hello trio"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("bob: hi from bob"), std::string::npos) << history.out;
  auto bob_alice = parley("bob", {"history", "alice"});  // no group message in the 1:1 chat
  EXPECT_EQ(bob_alice.exit_code, 0) << bob_alice.err;    // a contact: keys from the group
  EXPECT_EQ(bob_alice.out, "");
  // History shows a group event as sync did: the same line.
  auto history_json = parley("bob", {"--json", "history", "trio"});
  ASSERT_EQ(history_json.exit_code, 0) << history_json.err;
  const auto kept_events = lines_with(history_json.out, "\"type\": \"event\"");
  ASSERT_EQ(kept_events.size(), 1u) << history_json.out;
  EXPECT_EQ(kept_events[0], create_at_bob);
  EXPECT_EQ(field(kept_events[0], "change"), "create");
  EXPECT_NE(kept_events[0].find("\"members\": [\"alice\", \"bob\", \"carol\"]"), std::string::npos)
      << kept_events[0];

  auto info = parley("carol", {"--json", "group", "info", "trio"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(field(info.out, "name"), "trio");
  EXPECT_NE(info.out.find("\"admins\": [\"alice\"]"), std::string::npos) << info.out;

  // Only admins change the group.
  auto refused = parley("bob", {"group", "remove", "trio", "carol"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("admins"), std::string::npos) << refused.err;

  // Carol is removed: she is told, and what follows does not reach her.
  ASSERT_EQ(parley("alice", {"group", "remove", "trio", "carol"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "trio", "after carol"}).exit_code, 0);
  auto at_carol = parley("carol", {"--json", "sync"});
  ASSERT_EQ(at_carol.exit_code, 0) << at_carol.err;
  const auto removal = lines_with(at_carol.out, "\"type\": \"event\"");
  ASSERT_EQ(removal.size(), 1u) << at_carol.out;
  EXPECT_EQ(field(removal[0], "change"), "remove");
  EXPECT_EQ(field(removal[0], "user"), "carol");
  EXPECT_EQ(at_carol.out.find("after carol"), std::string::npos) << at_carol.out;
  auto at_bob = parley("bob", {"--json", "sync"});
  EXPECT_EQ(lines_with(at_bob.out, "\"text\": \"after carol\"").size(), 1u) << at_bob.out;
  auto outside = parley("carol", {"send", "trio", "let me back"});
  EXPECT_EQ(outside.exit_code, 1);
  EXPECT_NE(outside.err.find("no longer a member"), std::string::npos) << outside.err;

  // A name that is no group and no username is refused before anything is sent.
  EXPECT_EQ(parley("alice", {"send", "No Such Group", "x"}).exit_code, 2);

  // The rules a change breaks are said in words.
  auto last_admin = parley("alice", {"group", "demote", "trio", "alice"});
  EXPECT_EQ(last_admin.exit_code, 1);
  EXPECT_NE(last_admin.err.find("must keep an admin"), std::string::npos) << last_admin.err;
  auto self_removal = parley("alice", {"group", "remove", "trio", "alice"});
  EXPECT_EQ(self_removal.exit_code, 1);
  EXPECT_NE(self_removal.err.find("group leave"), std::string::npos) << self_removal.err;

  // A member added later learns the group's name before its ADD is shown.
  ASSERT_EQ(parley("dave", {"register", "dave"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"group", "add", "trio", "dave"}).exit_code, 0);
  auto at_dave = parley("dave", {"sync"});
  ASSERT_EQ(at_dave.exit_code, 0) << at_dave.err;
  EXPECT_NE(at_dave.out.find("* alice added dave (group 'trio'"), std::string::npos) << at_dave.out;
}

// A group named after one of this device's contacts (anyone may name a group anything) does
// not capture the contact: the bare name is refused as ambiguous, and @NAME is always the user.
TEST_F(cli, a_group_named_after_a_contact_captures_nothing_and_at_names_the_user) {
  for (const std::string name : {"alice", "bob", "carol"})
    ASSERT_EQ(parley(name, {"register", name}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"send", "bob", "hi bob"}).exit_code, 0);  // bob: a contact
  ASSERT_EQ(parley("carol", {"group", "create", "bob", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("alice", {"sync"}).exit_code, 0);  // alice learns of the group "bob"

  auto ambiguous = parley("alice", {"send", "bob", "which one?"});
  EXPECT_EQ(ambiguous.exit_code, 2);
  EXPECT_NE(ambiguous.err.find("the contact as @bob"), std::string::npos) << ambiguous.err;

  auto sent = parley("alice", {"--json", "send", "@bob", "to the user"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_EQ(field(sent.out, "group"), "") << sent.out;
  auto at_bob = parley("bob", {"--json", "sync"});
  const auto got = lines_with(at_bob.out, "\"text\": \"to the user\"");
  ASSERT_EQ(got.size(), 1u) << at_bob.out;
  EXPECT_EQ(field(got[0], "from"), "alice");
  EXPECT_EQ(field(got[0], "group"), "");
  auto at_carol = parley("carol", {"--json", "sync"});
  EXPECT_EQ(at_carol.out.find("to the user"), std::string::npos) << at_carol.out;
  EXPECT_NE(parley("alice", {"history", "@bob"}).out.find("to the user"), std::string::npos);
  EXPECT_EQ(parley("alice", {"send", "@No.Such", "x"}).exit_code, 2);  // not a username
}

}  // namespace
}  // namespace parley::test
