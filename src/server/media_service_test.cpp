// The media sweep against an object store that cannot be reached: it stops at the first
// DELETE that fails, so that the records of objects it could not delete are few (S3 has no
// orphan pass: an object whose record is gone is left to the bucket's lifecycle rules), and
// the rest wait for the next sweep.
#include "server/media_service.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "media/blob_store.hpp"
#include "redis_server.hpp"  // test_support::free_port
#include "store/rocksdb/rocksdb_store.hpp"
#include "store/store_test_calls.hpp"
#include "temp_dir.hpp"

namespace parley::server {
namespace {

using namespace std::chrono_literals;
using store::test_calls::wait_for;

TEST(media_sweep, an_unreachable_object_store_stops_the_sweep_at_its_first_failed_delete) {
  test_support::temp_dir dir("parley_media_sweep_");
  store::rocksdb_options o;
  o.path = dir.path() / "store";
  o.sync = false;
  store::rocksdb_store db(o);
  auto alice = wait_for<store::registration>([&](auto done) {
    db.register_account({"alice", {}}, done);
  });
  ASSERT_TRUE(alice);

  config cfg;
  cfg.media.s3 = true;
  cfg.media.s3_endpoint = "http://127.0.0.1:" + std::to_string(test_support::free_port());
  cfg.media.s3_bucket = "parley";
  cfg.media.s3_access_key = "key";
  cfg.media.s3_secret_key = "secret";
  cfg.media.upload_url_ttl = 1s;
  cfg.media.unreferenced_retention = 2s;
  cfg.media.sweep_interval = std::chrono::hours(1);  // only the sweeps this test runs
  media_service media(cfg, db);
  ASSERT_FALSE(media.start(boost::asio::ip::tcp::endpoint()).has_value()) << "S3: no address";

  constexpr int slots = 40;
  for (int i = 0; i < slots; ++i) {
    store::media_request r{alice->user, media::new_blob_id(), 1000, 0};
    ASSERT_TRUE(wait_for<std::uint64_t>([&](auto done) { db.create_media(r, done); }));
  }
  std::this_thread::sleep_for(2100ms);  // past the retention: every slot is due
  auto due = [&] {
    auto r = wait_for<std::vector<store::media_record>>(
        [&](auto done) { db.unreferenced_media(UINT64_MAX, 1000, done); });
    return r ? static_cast<int>(r->size()) : -1;
  };
  ASSERT_EQ(due(), slots);

  const auto report = media.sweep_once();
  EXPECT_TRUE(report.failed);
  EXPECT_GE(report.records_deleted, 1u);
  EXPECT_LE(report.records_deleted, 16u) << "at most one batch of records before its DELETEs";
  EXPECT_EQ(due(), slots - static_cast<int>(report.records_deleted))
      << "the others are kept for the next sweep";
  media.stop();
}

}  // namespace
}  // namespace parley::server
