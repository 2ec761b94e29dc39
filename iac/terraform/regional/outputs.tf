output "region" {
  value = var.region
}

output "role" {
  value = var.role
}

output "vpc_id" {
  value = aws_vpc.this.id
}

output "subnet_ids" {
  value = aws_subnet.this[*].id
}

output "db_identifier" {
  value = aws_db_instance.this.identifier
}

output "db_arn" {
  value = aws_db_instance.this.arn
}

output "db_endpoint" {
  value = aws_db_instance.this.address
}

output "asg_name" {
  value = aws_autoscaling_group.app.name
}

output "asg_desired_capacity" {
  value = aws_autoscaling_group.app.desired_capacity
}

output "target_group_arn" {
  value = aws_lb_target_group.app.arn
}

output "lb_dns_name" {
  value = aws_lb.entry.dns_name
}

output "listener_arn" {
  value = aws_lb_listener.app.arn
}

output "https_listener_arn" {
  value = var.certificate_arn != "" ? aws_lb_listener.https[0].arn : ""
}

output "region_endpoint" {
  value = local.endpoint
}

output "zone_id" {
  value = data.aws_route53_zone.this.zone_id
}

output "health_check_id" {
  value = var.role == "primary" ? aws_route53_health_check.entry[0].id : ""
}
