// The parley CLI as a user runs it, against a real parleyd: the quick-start session of the
// README, JSON output for scripts, and the errors a person sees.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <regex>

#include "server_process.hpp"
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
  // Runs `parley --server URL --profile ROOT/<who> ARGS...`, with `input` on stdin.
  run_result parley(const std::string& who, const std::vector<std::string>& args,
                    const std::string& input = "", const std::string& url = "") {
    const auto err_file = root_.path() / "stderr";
    const auto in_file = root_.path() / "stdin";
    std::ofstream(in_file) << input;
    std::string cmd = std::string(PARLEY_CLI_PATH) + " --server " +
                      shell_quote(url.empty() ? server.url() : url) + " --profile " +
                      shell_quote((root_.path() / who).string());
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

  static std::string field(const std::string& json, const std::string& key) {
    std::smatch m;
    std::regex re("\"" + key + "\": \"([^\"]*)\"");
    return std::regex_search(json, m, re) ? m[1].str() : "";
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
  EXPECT_EQ(field(parley("alice", {"--json", "status", id}).out, "status"), "sent");

  auto synced = parley("bob", {"--json", "sync"});
  ASSERT_EQ(synced.exit_code, 0) << synced.err;
  EXPECT_EQ(field(synced.out, "type"), "message");
  EXPECT_EQ(field(synced.out, "from"), "alice");
  EXPECT_EQ(field(synced.out, "message_id"), id);
  EXPECT_EQ(field(synced.out, "text"), "hi bob — ünïcode ✓");
  EXPECT_EQ(field(parley("alice", {"--json", "status", id}).out, "status"), "delivered");

  // Synced and acked: a second sync has nothing.
  EXPECT_EQ(parley("bob", {"--json", "sync"}).out, "");

  ASSERT_EQ(parley("bob", {"read", "alice"}).exit_code, 0);
  EXPECT_EQ(field(parley("alice", {"--json", "status", id}).out, "status"), "read");

  auto receipts = parley("alice", {"--json", "sync"});
  EXPECT_NE(receipts.out.find("\"status\": \"delivered\""), std::string::npos) << receipts.out;
  EXPECT_NE(receipts.out.find("\"status\": \"read\""), std::string::npos) << receipts.out;

  auto history = parley("bob", {"history", "alice"});
  EXPECT_NE(history.out.find("alice: hi bob"), std::string::npos) << history.out;
  // The human output shows the ticks.
  auto human = parley("alice", {"status", id});
  EXPECT_NE(human.out.find("read"), std::string::npos);
}

TEST_F(cli, chat_sends_each_line_and_marks_incoming_read) {
  ASSERT_EQ(parley("alice", {"register", "alice"}).exit_code, 0);
  ASSERT_EQ(parley("bob", {"register", "bob"}).exit_code, 0);
  auto before = parley("bob", {"--json", "send", "alice", "are you there?"});
  const std::string id = field(before.out, "message_id");

  auto chat = parley("alice", {"--json", "chat", "bob"}, "yes!\nsecond line\n");
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_EQ(std::count(chat.out.begin(), chat.out.end(), '\n') >= 2, true) << chat.out;

  auto synced = parley("bob", {"--json", "sync"});
  EXPECT_NE(synced.out.find("\"text\": \"yes!\""), std::string::npos) << synced.out;
  EXPECT_NE(synced.out.find("\"text\": \"second line\""), std::string::npos) << synced.out;
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
  EXPECT_NE(usage.err.find("usage: parley send USER TEXT"), std::string::npos) << usage.err;

  auto bad_name = parley("alice", {"send", "Bob!", "hi"});
  EXPECT_EQ(bad_name.exit_code, 2);

  auto unreachable = parley("alice", {"send", "alice", "hi"}, "", "ws://127.0.0.1:1");
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_NE(unreachable.err.find("server not reachable"), std::string::npos) << unreachable.err;

  auto bad_status = parley("alice", {"status", "12345"});
  EXPECT_EQ(bad_status.exit_code, 1);
  EXPECT_NE(bad_status.err.find("no such message"), std::string::npos) << bad_status.err;
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
  ASSERT_EQ(parley("bob", {"sync"}).exit_code, 0);

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

}  // namespace
}  // namespace parley::test
