// Watermark arithmetic every Store backend shares: a group's merged watermarks, an Ack's
// cursors as one per chat, and a message's status from its counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "store/store.hpp"

namespace parley::store {

// A group's merged watermarks as last pushed (group_receipts): the lowest delivered and read
// watermark of its members, who holds it, and the lowest of the others (what that member sees).
struct group_marks {
  std::uint64_t delivered = 0, delivered_holder = 0, delivered_next = 0;
  std::uint64_t read = 0, read_holder = 0, read_next = 0;
  bool operator==(const group_marks&) const = default;
  // What `user` sees: the lowest of every member but itself.
  std::uint64_t delivered_for(std::uint64_t user) const {
    return user == delivered_holder ? delivered_next : delivered;
  }
  std::uint64_t read_for(std::uint64_t user) const {
    return user == read_holder ? read_next : read;
  }
};

// The lowest of `values` (per member, parallel to `members`), who holds it, and the lowest of
// the rest; UINT64_MAX where there is none.
inline void lowest_two(const std::vector<std::uint64_t>& members,
                       const std::vector<std::uint64_t>& values, std::uint64_t& low,
                       std::uint64_t& holder, std::uint64_t& next) {
  low = UINT64_MAX;
  holder = 0;
  next = UINT64_MAX;
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (values[i] < low) {
      next = low;
      low = values[i];
      holder = members[i];
    } else if (values[i] < next) {
      next = values[i];
    }
  }
}

// The merged marks of members with these delivered (read counted as delivered) and read
// watermarks, parallel to `members`.
inline group_marks merge_marks(const std::vector<std::uint64_t>& members,
                               const std::vector<std::uint64_t>& delivered,
                               const std::vector<std::uint64_t>& read) {
  group_marks m;
  lowest_two(members, delivered, m.delivered, m.delivered_holder, m.delivered_next);
  lowest_two(members, read, m.read, m.read_holder, m.read_next);
  return m;
}

// An Ack's cursors sorted by chat, one per chat: a chat named twice counts at its highest seq.
inline void one_cursor_per_chat(std::vector<cursor_update>& cursors) {
  std::sort(cursors.begin(), cursors.end(), [](const cursor_update& a, const cursor_update& b) {
    return a.chat != b.chat ? a.chat < b.chat : a.seq > b.seq;
  });
  cursors.erase(std::unique(cursors.begin(), cursors.end(),
                            [](const cursor_update& a, const cursor_update& b) {
                              return a.chat == b.chat;
                            }),
                cursors.end());
}

// A message's status from its counts (status_report::recipients, delivered, read).
inline void settle_status(status_report& r) {
  if (r.recipients == 0) {
    r.status = message_status::sent;  // nobody else to have it (a group of one)
  } else if (r.read == r.recipients) {
    r.status = message_status::read;
  } else if (r.delivered == r.recipients) {
    r.status = message_status::delivered;
  }
}

}  // namespace parley::store
