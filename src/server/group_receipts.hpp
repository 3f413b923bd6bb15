// Merges the receipts of groups: a member's ack or read in a group does not push anything to
// the other members by itself; it marks the group, and at most once per `interval` per server
// the marked groups' merged watermarks are computed by the store (store::group_receipts: the
// lowest delivered and read watermark of every other member, per member) and pushed where
// they moved. A 1,024-member group whose members each ack every message thus costs its
// members one Receipts push per interval at most, not one per member per message
// (docs/architecture.md, "Groups").
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <cstdint>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "bus/bus.hpp"
#include "store/store.hpp"

namespace parley::server {

// Owned by a shared_ptr (the store's completions hold a weak one, to retry a failed merge).
class group_receipts : public std::enable_shared_from_this<group_receipts> {
 public:
  group_receipts(boost::asio::any_io_executor executor, store::store& store, bus::bus& bus,
                 std::chrono::milliseconds interval);

  // Any thread: these groups' watermarks moved (store::watermark_moves::groups).
  void moved(const std::vector<store::chat_id>& groups);

 private:
  void flush();

  boost::asio::any_io_executor executor_;
  store::store& store_;
  bus::bus& bus_;
  const std::chrono::milliseconds interval_;
  boost::asio::steady_timer timer_;  // used on executor_ only
  std::mutex mutex_;
  std::unordered_set<store::chat_id> marked_;  // guarded by mutex_
  bool scheduled_ = false;                     // guarded by mutex_: a flush is due
  std::chrono::steady_clock::time_point last_flush_{};  // executor_ only
};

}  // namespace parley::server
