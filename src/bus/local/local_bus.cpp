#include "bus/local/local_bus.hpp"

#include <utility>
#include <vector>

namespace parley::bus {

void local_bus::attach(device_id device, const std::string& username,
                       std::shared_ptr<endpoint> ep) {
  if (auto previous = devices_.attach(device, username, std::move(ep))) previous->replaced();
}

void local_bus::detach(device_id device, const endpoint* ep) { devices_.detach(device, ep); }

void local_bus::deliver_message(const std::vector<device_id>& devices, shared_envelope e) {
  for (auto& ep : devices_.find_each(devices)) ep->push_message(e);
}

void local_bus::deliver_receipts(const std::vector<store::receipt_delivery>& receipts) {
  for (auto& [device, marks] : receipts_by_device(receipts)) {
    if (auto ep = devices_.find(device)) ep->push_receipts(std::move(marks));
  }
}

void local_bus::deliver_ephemeral(const std::string& username, wire::encoded_frame frame) {
  for (auto& ep : devices_.of_user(username)) ep->push_ephemeral(frame);
}

std::size_t local_bus::connected_devices() const { return devices_.size(); }

}  // namespace parley::bus
