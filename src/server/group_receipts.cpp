#include "server/group_receipts.hpp"

#include <boost/asio/post.hpp>

#include "common/log.hpp"

namespace parley::server {

group_receipts::group_receipts(boost::asio::any_io_executor executor, store::store& store,
                               bus::bus& bus, std::chrono::milliseconds interval)
    : executor_(executor), store_(store), bus_(bus), interval_(interval), timer_(executor) {}

void group_receipts::moved(const std::vector<store::chat_id>& groups) {
  if (groups.empty()) return;
  {
    std::lock_guard lock(mutex_);
    marked_.insert(groups.begin(), groups.end());
    if (scheduled_) return;
    scheduled_ = true;
  }
  boost::asio::post(executor_, [this] {
    // At most one flush per interval: a group marked right after a flush waits for the rest
    // of the interval, gathering every ack that arrives meanwhile.
    timer_.expires_at(std::max(std::chrono::steady_clock::now(), last_flush_ + interval_));
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) flush();
    });
  });
}

void group_receipts::flush() {
  last_flush_ = std::chrono::steady_clock::now();
  std::unordered_set<store::chat_id> groups;
  {
    std::lock_guard lock(mutex_);
    groups.swap(marked_);
    scheduled_ = false;
  }
  for (store::chat_id chat : groups) {
    // The completion runs on the store's writer in commit order, as for ack(): the bus hands
    // each device its share.
    store_.group_receipts(chat, [&bus = bus_, chat, weak = weak_from_this()](
                                    store::result<std::vector<store::receipt_delivery>> r) {
      if (r) {
        bus.deliver_receipts(*r);
        return;
      }
      if (r.error() == store::errc::shutting_down) return;
      // A full disk or a busy writer passes: the group is marked again, for the next
      // interval (the store remembered nothing of this pass). Anything else (a corrupt
      // record) would fail again: logged and left to the next move in the group, or each
      // member's next login, which reads the marks from the store.
      if (r.error() != store::errc::unavailable && r.error() != store::errc::busy) {
        log_warn() << "group " << chat << ": merged receipts failed: " << r.error().message();
        return;
      }
      if (auto self = weak.lock()) self->moved(std::vector<store::chat_id>(1, chat));
    });
  }
}

}  // namespace parley::server
