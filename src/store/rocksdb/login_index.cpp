#include "store/rocksdb/login_index.hpp"

#include <algorithm>
#include <cstdint>
#include <unordered_set>

namespace parley::store {

void login_index::apply(const std::vector<change>& changes, std::uint64_t first,
                        std::uint64_t last) {
  std::lock_guard lock(mutex_);
  applied_ = std::max(applied_, last);
  for (const auto& c : changes) {
    auto it = devices_.find(c.device);
    if (it == devices_.end()) continue;  // no login since the start: its first one scans
    auto& e = it->second;
    switch (c.what) {
      case change::kind::message: {
        auto& highest = e.open().behind[c.chat];
        highest = std::max(highest, c.seq);
        break;
      }
      case change::kind::cursor:
        if (!e.p) break;
        if (auto b = e.p->behind.find(c.chat); b != e.p->behind.end() && b->second <= c.seq) {
          e.p->behind.erase(b);
          e.release_if_empty();
        }
        break;
      case change::kind::moved:
        e.open().moved.emplace_back(first + c.seq - 1, c.chat);
        if (e.p->moved.size() > max_moved_) compact_moved(e);
        break;
    }
  }
}

login_index::lookup_result login_index::lookup(std::uint64_t device, std::uint64_t since) {
  lookup_result out;
  std::lock_guard lock(mutex_);
  out.stamp = applied_;
  auto [it, created] = devices_.try_emplace(device);
  auto& e = it->second;
  if (created) {
    e.floor = applied_;
    e.id = next_entry_++;
  }
  out.entry = e.id;
  if (created || e.fillers > 0) {
    ++e.fillers;
    return out;
  }
  out.behind_known = true;
  if (e.p) {
    out.behind.assign(e.p->behind.begin(), e.p->behind.end());
    std::sort(out.behind.begin(), out.behind.end());
  }
  // A stamp above the last applied was not made by this store (another server's): not usable.
  if (since != 0 && since >= e.floor && since <= applied_) {
    out.moved_known = true;
    if (e.p) {
      auto& moved = e.p->moved;
      const auto after =
          std::upper_bound(moved.begin(), moved.end(), std::make_pair(since, UINT64_MAX));
      for (auto m = after; m != moved.end(); ++m) out.moved.push_back(m->second);
      moved.erase(moved.begin(), after);
      e.release_if_empty();
    }
    e.floor = since;  // what was at or below it is forgotten
    std::sort(out.moved.begin(), out.moved.end());
    out.moved.erase(std::unique(out.moved.begin(), out.moved.end()), out.moved.end());
  }
  return out;
}

void login_index::compact_moved(entry& e) const {
  auto& moved = e.p->moved;
  std::unordered_set<std::uint64_t> seen;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> latest;
  for (std::size_t i = moved.size(); i-- > 0;) {  // newest first
    if (seen.insert(moved[i].second).second) latest.push_back(moved[i]);
  }
  if (latest.size() > max_moved_ / 2) {
    // Forget; a client whose stamp is older than the last gets every watermark.
    e.floor = moved.back().first;
    decltype(e.p->moved)().swap(moved);
    e.release_if_empty();
    return;
  }
  std::reverse(latest.begin(), latest.end());
  moved = std::move(latest);
}

void login_index::filled(std::uint64_t device, std::uint64_t entry,
                         const std::vector<std::pair<std::uint64_t, std::uint64_t>>& behind) {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  // A concurrent scan failed and dropped the entry this scan was filling (and a login since
  // may have made another, which changes made before it are missing from: not this scan's).
  if (it == devices_.end() || it->second.id != entry) return;
  auto& e = it->second;
  for (const auto& [chat, head] : behind) {
    auto& highest = e.open().behind[chat];
    highest = std::max(highest, head);
  }
  if (e.fillers > 0) --e.fillers;
}

void login_index::fill_failed(std::uint64_t device, std::uint64_t entry) {
  std::lock_guard lock(mutex_);
  if (auto it = devices_.find(device); it != devices_.end() && it->second.id == entry)
    devices_.erase(it);
}

void login_index::settle(std::uint64_t device, std::uint64_t chat, std::uint64_t cursor) {
  std::lock_guard lock(mutex_);
  auto it = devices_.find(device);
  if (it == devices_.end()) return;
  auto& e = it->second;
  if (!e.p) return;
  auto& behind = e.p->behind;
  if (auto b = behind.find(chat); b != behind.end() && b->second <= cursor) {
    behind.erase(b);
    e.release_if_empty();
  }
}

std::pair<std::size_t, std::size_t> login_index::size() const {
  std::lock_guard lock(mutex_);
  std::size_t entries = 0;
  for (const auto& [device, e] : devices_) {
    if (e.p) entries += e.p->behind.size() + e.p->moved.size();
  }
  return {devices_.size(), entries};
}

}  // namespace parley::store
