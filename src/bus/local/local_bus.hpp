// The embedded Bus: every device is connected to this process, so delivering is finding its
// endpoint in the registry and pushing to it (after the registry's lock is released).
#pragma once

#include "bus/bus.hpp"
#include "bus/device_registry.hpp"

namespace parley::bus {

class local_bus final : public bus {
 public:
  void attach(device_id device, const std::string& username, std::shared_ptr<endpoint> ep) override;
  void detach(device_id device, const endpoint* ep) override;
  void deliver_message(const std::vector<device_id>& devices, shared_envelope e) override;
  void deliver_receipts(const std::vector<store::receipt_delivery>& receipts) override;
  void deliver_ephemeral(const std::string& username, wire::encoded_frame frame) override;
  std::size_t connected_devices() const override;
  bool pushes_in_commit_order() const override { return true; }  // one process, one commit order
  void stop() override {}  // no threads of its own: pushes run on their senders' threads

 private:
  device_registry devices_;
};

}  // namespace parley::bus
