variable "region" {
  description = "The AWS region of this workspace."
  type        = string
}

variable "role" {
  description = "primary: the database is the writer; secondary: a cross-region read replica of source_db_arn."
  type        = string
  validation {
    condition     = contains(["primary", "secondary"], var.role)
    error_message = "role is primary or secondary."
  }
}

variable "service" {
  description = "Name of the service; every resource is named and tagged with it."
  type        = string
  default     = "payments"
}

variable "name" {
  description = "Prefix of the resources' names."
  type        = string
  default     = "drkit-payments"
}

variable "vpc_cidr" {
  description = "The region's VPC; two /24 subnets are carved from it."
  type        = string
}

variable "instance_count" {
  description = "Desired capacity of the Auto Scaling group (payments instances in this region)."
  type        = number
  default     = 2
}

variable "max_instances" {
  description = "Upper bound of the Auto Scaling group."
  type        = number
  default     = 9
}

variable "ami_id" {
  description = "The payments instances' image."
  type        = string
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

variable "app_port" {
  description = "The port the payments API listens on, behind the load balancer."
  type        = number
  default     = 8080
}

variable "db_instance_class" {
  type    = string
  default = "db.t4g.micro"
}

variable "db_identifier" {
  description = "The region's RDS instance identifier (the writer in the primary, the replica in the secondary)."
  type        = string
}

variable "db_username" {
  description = "Master user of the primary database (unused by a replica)."
  type        = string
  default     = "payments_admin"
}

variable "db_password" {
  description = "Master password of the primary database (unused by a replica). Pass it from a secret store, never in a file."
  type        = string
  default     = null
  sensitive   = true
}

variable "source_db_arn" {
  description = "The primary database's ARN, which the secondary region replicates (role secondary only)."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ACM certificate of the load balancer's HTTPS listener (empty: no HTTPS listener). Rotations switch it (drkit runbook cert-rotation-acm); the module then leaves it alone."
  type        = string
  default     = ""
}

variable "zone_name" {
  description = "The Route53 hosted zone of the payments hostname (it exists already)."
  type        = string
}

variable "hostname" {
  description = "The payments hostname clients resolve (a failover record set in zone_name)."
  type        = string
}

variable "region_endpoint" {
  description = "What the failover record names for this region (default: the load balancer's DNS name)."
  type        = string
  default     = ""
}

variable "health_check_fqdn" {
  description = "The name the Route53 health check probes over HTTPS (default: region_endpoint)."
  type        = string
  default     = ""
}

variable "health_check_ip" {
  description = "Probe this address instead of resolving health_check_fqdn (the lab)."
  type        = string
  default     = null
}

variable "health_check_port" {
  type    = number
  default = 443
}

variable "emulated" {
  description = "true against an emulated control plane (moto): skip the account and region look-ups real AWS answers."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags every resource carries (the estate's own; drills keep them)."
  type        = map(string)
  default     = {}
}
