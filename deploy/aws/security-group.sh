#!/bin/sh
# The security group rmaunet-cluster made by hand, for accounts where `ray up` may not create
# one (cluster.yaml's provider.security_group lets Ray make it). Ray adds no rule to a group
# that already has rules, so this makes both that the cluster needs:
#   - all traffic from the group itself (the self-referencing rule: Ray's GCS, raylets, object
#     managers and workers talk on many ports; without it no worker can join the head), and
#   - SSH from your address range only (the launcher's updates and `ray dashboard`'s tunnel).
# Usage: deploy/aws/security-group.sh VPC_ID YOUR_CIDR   (e.g. vpc-0abc… 203.0.113.0/24)
set -eu
vpc=$1
ssh_cidr=$2
region=${AWS_REGION:-us-west-2}
group=$(aws ec2 create-security-group --region "$region" --vpc-id "$vpc" --group-name rmaunet-cluster \
  --description "rmaunet Ray cluster: its own nodes, SSH from one range" --query GroupId --output text)
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$group" \
  --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$group}]"
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$group" \
  --ip-permissions "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$ssh_cidr}]"
echo "$group"
