// The devices connected to this process, by device and by user, with their endpoints: all of
// the embedded bus (local_bus), and the part of the cluster's bus (redis_bus) that is this
// node's own. Thread-safe: one mutex for the maps only. Nothing here pushes: callers push to
// the endpoints it returns after the lock is released, so no lock is held across a send.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bus/bus.hpp"

namespace parley::bus {

class device_registry {
 public:
  using endpoints = std::vector<std::shared_ptr<endpoint>>;

  // Records `ep` as the device's connection from `attached_ms` on (a time the caller keeps,
  // 0 if it keeps none). Returns the endpoint it takes the place of, if another one was
  // there: the caller tells it replaced().
  std::shared_ptr<endpoint> attach(device_id device, const std::string& username,
                                   std::shared_ptr<endpoint> ep, std::uint64_t attached_ms = 0);
  // Forgets the device if `ep` is still its connection (a newer one keeps it). True if it did.
  bool detach(device_id device, const endpoint* ep);

  std::shared_ptr<endpoint> find(device_id device) const;
  // The device's endpoint if it was attached at or before `at_ms`, else null.
  std::shared_ptr<endpoint> find_attached_by(device_id device, std::uint64_t at_ms) const;
  // The endpoints of those of `devices` connected here, under one lock (a group's fan-out
  // names up to 1,024 members' devices); the others, in order, into `absent` if given.
  endpoints find_each(const std::vector<device_id>& devices,
                      std::vector<device_id>* absent = nullptr) const;
  // The endpoints of `username`'s devices connected here.
  endpoints of_user(const std::string& username) const;
  endpoints all() const;
  std::vector<device_id> ids() const;
  std::size_t size() const;

 private:
  struct entry {
    std::string username;
    std::weak_ptr<endpoint> ep;
    std::uint64_t attached_ms = 0;
  };
  using devices_map = std::unordered_map<device_id, entry>;

  // Removes the device's element of by_user_ (before its entry goes or changes its name).
  void unlink_user(devices_map::const_iterator it);

  mutable std::mutex mutex_;
  devices_map devices_;
  // username -> each of its devices here. The key views the username held in the device's
  // entry in devices_ (a node that never moves), so a connection costs one small node here,
  // not a string, a set and its buckets per user (~200 bytes per idle connection measured).
  std::unordered_multimap<std::string_view, device_id> by_user_;
};

}  // namespace parley::bus
