// What changed for each device since it last logged in, so that a login reads that and not
// every chat of the account (docs/architecture.md, "Logins").
//
// Per device, in memory:
//  - `behind`: chat -> the highest seq the device was sent from another device. A chat whose
//    entry is above the device's cursor has something to drain; an ack at or above the entry
//    removes it. A device's own messages never add one (it is never sent them).
//  - `moved`: chat -> the stamp of the last change that moved a watermark the device is told
//    of (a Receipt). A login that presents a receipts stamp the index can answer for gets the
//    chats moved after it, and the entries at or below it are forgotten (the client has them).
//
// A request's stamp is the store's sequence number of its last write: it grows across
// restarts, so a client's stamp from before a restart is older than any index built after
// it, and each request of a group commit has its own (a client that kept the stamp of one
// request's receipts has had every earlier request's: pushes run in commit order). The stamp
// a login hands out is the last one applied here (not the store's latest sequence number),
// so that every change it covers is in the index when the login looks.
//
// The index is built lazily: a device has none until its first login after a start, which
// scans all the account's chats (fill) while the writer already adds to the new entry; from
// then on the writer keeps it after every commit. The entry answers for `moved` from its
// `floor` on: the stamp when it was created, raised to each stamp a login presents (the
// entries at or below it are forgotten then, so an older stamp presented later, say from a
// restored client, gets everything), and to the last stamp forgotten when `moved` outgrew
// its bound and was emptied. Entries may over-report (a chat listed that is not behind, or whose watermarks
// did not move): readers check against the store. They never under-report.
//
// Thread-safe: the writer applies, readers look up, under one mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace parley::store {

class login_index {
 public:
  // A change the writer records while applying a request, and applies once it is durable.
  struct change {
    enum class kind : std::uint8_t {
      message,  // `device` was sent `seq` of `chat` (a live push or its next drain)
      cursor,   // `device`'s cursor in `chat` moved to `seq`
      moved,    // a watermark in `chat` that `device` is told of moved (seq unused)
    };
    kind what = kind::message;
    std::uint64_t device = 0;
    std::uint64_t chat = 0;
    // message, cursor: the chat's seq. moved: the request's last write's position in the
    // group's batch (1-based), made a stamp by apply().
    std::uint64_t seq = 0;
  };

  // `max_moved`: the bound of one device's `moved` (moves, a chat that moved again counted
  // again); past it the entry keeps each chat's latest move, and if those are still more than
  // half the bound it forgets them all (its floor rises), and older stamps get the full
  // answer again.
  // `start`: the store's sequence number when it opened (nothing is pending then).
  login_index(std::size_t max_moved, std::uint64_t start)
      : max_moved_(max_moved), applied_(start) {}

  // Writer: the changes of a commit whose writes have sequence numbers first..last, in commit
  // order.
  void apply(const std::vector<change>& changes, std::uint64_t first, std::uint64_t last);

  struct lookup_result {
    // false: the device had no index (or one still being filled); the caller scans every chat
    // and then calls filled() or fill_failed() exactly once, with `entry`.
    bool behind_known = false;
    // The entry the scan fills: an entry dropped by another scan's failure and made again is
    // another entry, which this scan must not report to.
    std::uint64_t entry = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> behind;  // chat -> highest seq, sorted
    // false: `since` is 0 or outside what the entry answers for; the caller reads every chat's
    // watermarks.
    bool moved_known = false;
    std::vector<std::uint64_t> moved;  // chats moved after `since`, sorted
    // The last stamp applied: every change up to it is in the index (or was pushed before
    // the caller's reads began); the login's QueueEmpty.receipts_stamp.
    std::uint64_t stamp = 0;
  };
  // Reader, at a login that presents `since`. Forgets the moved entries at or below a usable
  // `since`.
  lookup_result lookup(std::uint64_t device, std::uint64_t since);

  // Reader, after its scan of every chat: the chats it found behind, with their heads. `entry`
  // is lookup_result::entry; nothing happens if that entry is gone (another scan failed).
  void filled(std::uint64_t device, std::uint64_t entry,
              const std::vector<std::pair<std::uint64_t, std::uint64_t>>& behind);
  // Reader: its scan failed; the entry is dropped (if it is still `entry`), and the next login
  // scans again.
  void fill_failed(std::uint64_t device, std::uint64_t entry);

  // Reader: the device's cursor in `chat` was found at `cursor`; forgets the chat's behind
  // entry if that covers it (and no newer message raised the entry meanwhile).
  void settle(std::uint64_t device, std::uint64_t chat, std::uint64_t cursor);

  // Devices with an entry, and the total entries (behind + moved), for tests and metrics.
  std::pair<std::size_t, std::size_t> size() const;

 private:
  // What a device has pending; allocated only while it has any, so that the entry of a
  // device with nothing pending (most connected ones) is 24 bytes.
  struct pending {
    std::unordered_map<std::uint64_t, std::uint64_t> behind;
    // (stamp, chat) in stamp order (apply() sees stamps in increasing order), a chat that
    // moved again listed again: appending is all a move costs, and a login takes the tail
    // above its stamp and drops the head (a hash map's erase of the head cost ~250 ns an
    // entry, most of a login after a busy session: docs/performance.md, issue 13's "Second
    // session").
    std::vector<std::pair<std::uint64_t, std::uint64_t>> moved;
  };
  struct entry {
    std::unique_ptr<pending> p;  // null: nothing pending
    std::uint64_t floor = 0;
    std::uint64_t id = 0;  // lookup_result::entry
    int fillers = 0;       // scans under way; the entry is usable when none is
    pending& open() {
      if (!p) p = std::make_unique<pending>();
      return *p;
    }
    void release_if_empty() {
      if (p && p->behind.empty() && p->moved.empty()) p.reset();
    }
  };
  // Keeps the latest stamp of each chat in `moved`; if that is still more than half the
  // bound, forgets them all (the floor rises to the last).
  void compact_moved(entry& e) const;
  const std::size_t max_moved_;
  mutable std::mutex mutex_;
  std::uint64_t applied_;  // the last stamp applied
  std::uint64_t next_entry_ = 1;
  std::unordered_map<std::uint64_t, entry> devices_;
};

}  // namespace parley::store
